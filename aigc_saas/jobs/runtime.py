"""Worker side: claim a job fairly, hand it to the engine of its loaded plugin, record the outcome."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import asdict
from typing import Any

from aigc_saas.assets.inputs import attach_inputs
from aigc_saas.jobs import engine_host, events, services
from aigc_saas.jobs.engine_host import release_connection
from aigc_saas.jobs.models import Job, JobState
from aigc_saas.plugins.models import PluginRecord
from aigc_saas.plugins.services import effective_config, registry
from generators.base import GenerationResult, GeneratorConfig
from generators.errors import GeneratorError, JobCancelled
from generators.registry import PluginInfo
from hardware import DeviceChoice, DeviceUnavailable, detect_devices, select_device
from hardware.cache import DoesNotFit, ModelCache, default_budgets
from hardware.oom import DeviceOutOfMemory, plan_memory_mode
from hardware.threads import configure_cpu_threads

log = logging.getLogger(__name__)

_cache: ModelCache | None = None
_cache_lock = threading.Lock()


def model_cache() -> ModelCache:
    """This process's cache, made on first use so neither the web process nor a prefork parent imports torch."""
    global _cache
    with _cache_lock:
        if _cache is None:
            configure_cpu_threads()  # the first model this process loads: set torch's CPU threads first
            _cache = ModelCache(default_budgets(detect_devices()))  # AIGC_CACHE_BUDGET_MB_<KIND> overrides
        return _cache


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def resolve(job: Job) -> tuple[PluginInfo, GeneratorConfig, DeviceChoice]:
    """The plugin, its effective config (with the job's model) and the device this worker gives it."""
    info = registry().get(job.generator)
    record = PluginRecord.objects.get(name=job.generator)
    config = effective_config(record, info.cls)
    if job.model_id and job.model_id != config.model_id:
        config = config.model_copy(update={"model_id": job.model_id})
    device = plan_memory_mode(select_device(info.cls.needs), info.cls.needs, cache=model_cache())
    return info, config, device


def record_outcome(job: Job, outcome: GenerationResult | BaseException) -> None:
    if isinstance(outcome, JobCancelled):
        services.mark_cancelled(job, outcome.message)
    elif isinstance(outcome, GeneratorError):
        services.fail_job(job, outcome.code, outcome.message)
    elif isinstance(outcome, DeviceUnavailable | DoesNotFit | DeviceOutOfMemory):
        services.fail_job(job, outcome.code, getattr(outcome, "message", str(outcome)))
    elif isinstance(outcome, BaseException):
        log.error("job %s failed", job.pk, exc_info=outcome)
        services.fail_job(job, "internal_error", f"{type(outcome).__name__}: {outcome}")
    else:
        try:
            services.finish_job(job, outcome)
        except Exception as exc:  # noqa: BLE001 - storing failed: the job says so, nothing half-written stays
            record_outcome(job, exc)


def execute_job(job_id: str, queue: str | None = None) -> str:
    """Answer one doorbell of `queue`: claim the fairest job there (this one when its tenant's turn allows), run
    it on its engine and record the outcome. Returns the claimed job's final state, or "skipped"."""
    if queue is None:
        queue = Job.objects.filter(pk=job_id).values_list("queue", flat=True).first()
        if queue is None:
            return "skipped"
    job = services.claim_next(queue, worker_name(), preferred=job_id)
    if job is None:
        return "skipped"
    try:
        info, config, device = resolve(job)
        Job.objects.filter(pk=job.pk, attempts=job.attempts).update(device=device.device, plugin_version=info.version)
        params = attach_inputs(job, info.cls.validate_params(job.params))
        outcome: Any = engine_host.run(job, info, config, device, params)
    except Exception as exc:  # noqa: BLE001 - the job records the failure; the worker keeps serving
        outcome = exc
    release_connection()
    if outcome is not None:  # None: a newer attempt owns the job; this one writes nothing
        record_outcome(job, outcome)
    if job.state == JobState.RUNNING:  # a recorded outcome read the row back already
        job.refresh_from_db()
    return job.state


def heartbeat(queue: str | None = None) -> None:
    """Record this worker's devices, model cache and engines where the admin, `/readyz` and submission read them."""
    try:
        services.record_worker_status(
            worker_name(),
            devices=[asdict(d) for d in detect_devices()],
            cache=model_cache().snapshot(),
            queues=[q for q in os.environ.get("AIGC_WORKER_CONSUMES", "").split(",") if q] + ([queue] if queue else []),
            engines=engine_host.snapshot(),
        )
    except Exception:  # noqa: BLE001 - a report must never break a job
        log.exception("could not record the worker status")
    finally:
        release_connection()


def start_worker_threads(interval: float = 5.0) -> None:
    """A heartbeat (liveness for the sweep and `/readyz`) and the listener for cancel broadcasts.

    Only in a generation worker (it runs jobs in its own threads); a control worker has nothing to cancel."""
    if not set(os.environ.get("AIGC_WORKER_CONSUMES", "").split(",")) - {"control", ""}:
        return

    def beat() -> None:
        while True:
            heartbeat()
            threading.Event().wait(interval)

    def listen() -> None:
        while True:
            try:
                pubsub = events.client().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(events.CANCEL_CHANNEL)
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        engine_host.cancel(message["data"].decode())
            except Exception as exc:  # noqa: BLE001 - Redis restarts: subscribe again; rows still carry the flag
                log.warning("cancel listener lost Redis (%s); reconnecting", exc)
                threading.Event().wait(1)

    for target, name in ((beat, "aigc-heartbeat"), (listen, "aigc-cancel-listener")):
        threading.Thread(target=target, name=name, daemon=True).start()
