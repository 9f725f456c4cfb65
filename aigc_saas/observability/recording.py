"""What feeds the metrics: job submissions and finishes (signals), and samples of a worker's cache, devices
and engines. Nothing here may break a job: every recorder swallows its own errors and logs them."""

from __future__ import annotations

import ast
import functools
import logging
import threading
from typing import Any

from aigc_saas.observability import metrics

log = logging.getLogger(__name__)


def job_submitted(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """post_save of Job: a new row is a submission (services.submit_job is the only place that creates one)."""
    if created:
        metrics.JOBS.labels(instance.generator, "queued").inc()
        log.info(
            "job queued: %s on queue %s",
            instance.generator,
            instance.queue,
            extra={"job_id": str(instance.pk), "tenant_id": str(instance.tenant_id)},
        )


def job_finished(sender: Any, job: Any, **kwargs: Any) -> None:
    """The `job_finished` signal: count the state, observe queue time, run time and throughput."""
    try:
        _record_finished(job)
    except Exception:  # noqa: BLE001 - metrics never fail a job
        log.exception("could not record metrics for job %s", getattr(job, "pk", "?"))


def _record_finished(job: Any) -> None:
    metrics.JOBS.labels(job.generator, job.state).inc()
    log.info(
        "job %s: %s%s",
        job.state,
        job.generator,
        f" ({job.error_code})" if job.error_code else "",
        extra={"job_id": str(job.pk), "tenant_id": str(job.tenant_id)},
    )
    if job.started_at is None:
        return  # cancelled while queued: it never ran
    metrics.JOB_QUEUE_SECONDS.labels(job.generator, job.queue).observe(
        max((job.started_at - job.created_at).total_seconds(), 0.0)
    )
    if job.finished_at is None:
        return
    run_seconds = max((job.finished_at - job.started_at).total_seconds(), 0.0)
    metrics.JOB_DURATION.labels(job.generator, job.state).observe(run_seconds)
    if job.state != "succeeded":
        return
    metadata = (job.result or {}).get("metadata") or {}
    tokens = metadata.get("completion_tokens")
    if isinstance(tokens, int) and tokens > 0:
        metrics.TOKENS.labels(job.generator).inc(tokens)
        if run_seconds > 0:
            metrics.TOKENS_PER_SECOND.labels(job.generator).observe(tokens / run_seconds)
    # The result lists the job's artifact ids: a job without any (most text jobs) costs no query here.
    images = (
        job.artifacts.filter(content_type__startswith="image/").count() if (job.result or {}).get("artifacts") else 0
    )
    if images:
        metrics.IMAGES.labels(job.generator).inc(images)
        if run_seconds > 0:
            metrics.IMAGES_PER_SECOND.labels(job.generator).observe(images / run_seconds)


@functools.lru_cache(maxsize=2048)
def tenant_of_job(job_id: str) -> str | None:
    """A job's tenant id for a log line that knows only the job id (a job never changes tenant: cached)."""
    from aigc_saas import rows
    from aigc_saas.jobs.models import Job

    try:  # rows: Celery's "received" line of every job passes here, and the ORM's compiler was 8 % of a worker
        found = rows.values(Job, ["tenant_id"], id=job_id)
    except Exception:  # noqa: BLE001 - a log line must never fail on a database hiccup
        return None
    return str(found[0][0]) if found else None


_loads_seen: set[tuple[str, float]] = set()
_loads_lock = threading.Lock()


def _generator_of(key: str) -> str:
    """The plugin name from a cache key: runtime keys are tuples that start with it."""
    try:
        parsed = ast.literal_eval(key)
    except (ValueError, SyntaxError):
        return "unknown"
    return str(parsed[0]) if isinstance(parsed, tuple) and parsed else "unknown"


def sample_worker() -> None:
    """Copy this process's model cache, devices and engines into the gauges (called after each task and
    periodically): the exporter runs in the worker's parent, which holds no models."""
    try:
        _sample_cache()
        _sample_devices()
        _sample_engines()
    except Exception:  # noqa: BLE001
        log.exception("could not sample the worker's metrics")


def _sample_cache() -> None:
    from aigc_saas.jobs.runtime import model_cache

    snapshot = model_cache().snapshot()
    for device, usage in (snapshot.get("devices") or {}).items():
        metrics.CACHE_USED.labels(device).set(usage.get("used_bytes") or 0)
        metrics.CACHE_BUDGET.labels(device).set(usage.get("budget_bytes") or 0)
        metrics.CACHE_ENTRIES.labels(device).set(usage.get("entries") or 0)
    metrics.CACHE_EVICTIONS.set(snapshot.get("evictions") or 0)
    for entry in snapshot.get("entries") or []:
        seen = (entry["key"], entry["loaded_at"])
        with _loads_lock:  # task threads and the periodic sampler run this at once: count each load once
            if seen in _loads_seen:
                continue
            _loads_seen.add(seen)
            metrics.MODEL_LOAD_SECONDS.labels(_generator_of(entry["key"]), entry["device"]).observe(
                entry.get("load_seconds") or 0.0
            )


def _sample_devices() -> None:
    from hardware import detect_devices
    from hardware.memory import device_free_bytes

    for info in detect_devices():
        if info.total_memory:
            metrics.DEVICE_TOTAL.labels(info.id).set(info.total_memory)
        free = device_free_bytes("cpu") if info.kind == "cpu" else info.free_memory  # MemAvailable, not free pages
        if free is not None:
            metrics.DEVICE_FREE.labels(info.id).set(free)


def engine_snapshot() -> list[dict[str, Any]]:
    """The serving engines of this process (the lead's engine_host), or none where it is not installed."""
    try:
        from aigc_saas.jobs import engine_host
    except ImportError:
        return []
    return list(engine_host.snapshot())


def _sample_engines() -> None:
    gauges = {
        "running": metrics.ENGINE_RUNNING,
        "waiting": metrics.ENGINE_WAITING,
        "kv_budget_tokens": metrics.ENGINE_KV_BUDGET,
        "kv_used_tokens": metrics.ENGINE_KV_USED,
        "max_rows": metrics.ENGINE_MAX_ROWS,
        "steps_total": metrics.ENGINE_STEPS,
        "rows_total": metrics.ENGINE_ROWS,
        "step_seconds_total": metrics.ENGINE_STEP_SECONDS,
        "prefill_steps_total": metrics.ENGINE_PREFILL_STEPS,
        "prefill_step_seconds_total": metrics.ENGINE_PREFILL_STEP_SECONDS,
        "emit_seconds_total": metrics.ENGINE_EMIT_SECONDS,
        "loop_seconds_total": metrics.ENGINE_LOOP_SECONDS,
        "tokens_total": metrics.ENGINE_TOKENS,
        "items_total": metrics.ENGINE_ITEMS,
        "draining": metrics.ENGINE_DRAINING,
    }
    for engine in engine_snapshot():
        labels = (str(engine.get("generator", "")), str(engine.get("model_id", "")), str(engine.get("device", "")))
        for field, gauge in gauges.items():
            value = engine.get(field)
            if isinstance(value, int | float):
                gauge.labels(*labels).set(value)
