"""Prometheus metrics (prometheus-client, multiprocess mode), all prefixed `aigc_`.

Every process of one server writes its samples to files in one directory (`PROMETHEUS_MULTIPROC_DIR`):
the web's several processes, or a Celery worker's parent and prefork children. The web's `/metrics` and
a worker's exporter (its parent process, on `AIGC_METRICS_PORT`) read the whole directory, so a scrape
sees every process of that server, whichever answers. Workers get their own port rather than sharing the
web's directory because in compose (or on several machines) they do not share a filesystem with it.

The directory must be chosen before prometheus_client is imported: this module does it first thing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse


def prepare_multiprocess_dir() -> Path:
    """`PROMETHEUS_MULTIPROC_DIR` when the operator sets it, else `$AIGC_METRICS_DIR/pg<process group>`.

    The processes of one server share a process group (a shell job, a container, each `stack.spawn`), so they
    meet in one directory while another server on the same host gets its own. The group leader starts clean.
    """
    explicit = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if explicit:
        path = Path(explicit)
    else:
        group = os.getpgid(0)
        base = Path(settings.AIGC_METRICS_DIR)
        path = base / f"pg{group}"
        if os.getpid() == group:
            shutil.rmtree(path, ignore_errors=True)  # a recycled group id must not inherit old samples
            _remove_dirs_of_dead_groups(base)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _remove_dirs_of_dead_groups(base: Path) -> None:
    if not base.is_dir():
        return
    for child in base.glob("pg*"):
        with contextlib.suppress(ValueError):
            group = int(child.name[2:])
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                shutil.rmtree(child, ignore_errors=True)
            except PermissionError:
                pass  # alive, someone else's


MULTIPROC_DIR = prepare_multiprocess_dir()

from prometheus_client import (  # noqa: E402 - only after the directory is set
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import values as _values  # noqa: E402

if not getattr(_values.ValueClass, "_multiprocess", False):
    # A library imported prometheus_client before the directory was set: switch it to multiprocess values now,
    # before any metric of ours exists, or each process would silently count only for itself.
    _values.ValueClass = _values.MultiProcessValue()


def _mark_dead() -> None:
    with contextlib.suppress(Exception):
        multiprocess.mark_process_dead(os.getpid())


atexit.register(_mark_dead)  # a live gauge of an exited process must stop counting

SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
RATES = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

# --- the web ---------------------------------------------------------------------------------------------
API_REQUESTS = Counter(
    "aigc_api_requests", "HTTP requests answered, by route pattern and status code.", ["method", "route", "status"]
)
API_LATENCY = Histogram(
    "aigc_api_request_duration_seconds",
    "Time to produce the response (headers, for a stream), by route pattern.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# --- jobs (submission in the web, the rest where the job finishes) ---------------------------------------
JOBS = Counter(
    "aigc_jobs",
    "Jobs reaching a state: `queued` when submitted, then `succeeded`, `failed` or `cancelled`.",
    ["generator", "state"],
)
JOB_QUEUE_SECONDS = Histogram(
    "aigc_job_queue_seconds", "Time a job waited from submission to its start.", ["generator", "queue"], buckets=SECONDS
)
JOB_DURATION = Histogram(
    "aigc_job_duration_seconds", "Time a job ran, from start to finish.", ["generator", "state"], buckets=SECONDS
)
TOKENS = Counter("aigc_generated_tokens", "Completion tokens of succeeded jobs.", ["generator"])
IMAGES = Counter("aigc_generated_images", "Images stored by succeeded jobs.", ["generator"])
TOKENS_PER_SECOND = Histogram(
    "aigc_job_tokens_per_second", "Completion tokens per second of run time, per job.", ["generator"], buckets=RATES
)
IMAGES_PER_SECOND = Histogram(
    "aigc_job_images_per_second",
    "Images per second of run time, per job.",
    ["generator"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20),
)

# --- the worker's models and devices (sampled in each process that runs jobs) ----------------------------
MODEL_LOAD_SECONDS = Histogram(
    "aigc_model_load_seconds", "Time to load a plugin's model (setup).", ["generator", "device"], buckets=SECONDS
)
CACHE_USED = Gauge(
    "aigc_model_cache_used_bytes", "Bytes of loaded models in the cache.", ["device"], multiprocess_mode="livesum"
)
CACHE_BUDGET = Gauge(
    "aigc_model_cache_budget_bytes", "The cache's memory budget.", ["device"], multiprocess_mode="livesum"
)
CACHE_ENTRIES = Gauge(
    "aigc_model_cache_entries", "Models loaded in the cache.", ["device"], multiprocess_mode="livesum"
)
CACHE_EVICTIONS = Gauge(
    "aigc_model_cache_evictions", "Models evicted since the process started.", [], multiprocess_mode="livesum"
)
DEVICE_TOTAL = Gauge(
    "aigc_device_memory_total_bytes", "Total memory of a device.", ["device"], multiprocess_mode="livemostrecent"
)
DEVICE_FREE = Gauge(
    "aigc_device_memory_free_bytes",
    "Free memory of a device, as its driver (or the kernel, for cpu) reports it.",
    ["device"],
    multiprocess_mode="livemostrecent",
)

# --- the serving engine (aigc_saas.jobs.engine_host.snapshot()) ------------------------------------------
ENGINE_LABELS = ["generator", "model_id", "device"]
ENGINE_RUNNING = Gauge(
    "aigc_engine_running_rows", "Rows in the engine's running batch.", ENGINE_LABELS, multiprocess_mode="livesum"
)
ENGINE_WAITING = Gauge(
    "aigc_engine_waiting_rows", "Jobs waiting for a place in the batch.", ENGINE_LABELS, multiprocess_mode="livesum"
)
ENGINE_KV_BUDGET = Gauge(
    "aigc_engine_kv_budget_tokens", "KV-cache budget in tokens.", ENGINE_LABELS, multiprocess_mode="livesum"
)
ENGINE_KV_USED = Gauge(
    "aigc_engine_kv_used_tokens", "KV-cache tokens in use.", ENGINE_LABELS, multiprocess_mode="livesum"
)
ENGINE_MAX_ROWS = Gauge(
    "aigc_engine_max_rows", "Rows the engine may run together.", ENGINE_LABELS, multiprocess_mode="livesum"
)
ENGINE_STEPS = Gauge(
    "aigc_engine_steps", "Steps the engine ran since it started.", ENGINE_LABELS, multiprocess_mode="livesum"
)
ENGINE_ROWS = Gauge(
    "aigc_engine_rows_stepped",
    "Rows summed over the engine's steps (divided by aigc_engine_steps: the mean batch).",
    ENGINE_LABELS,
    multiprocess_mode="livesum",
)
ENGINE_STEP_SECONDS = Gauge(
    "aigc_engine_step_seconds",
    "Seconds the engine spent in steps (divided by aigc_engine_steps: the mean step time).",
    ENGINE_LABELS,
    multiprocess_mode="livesum",
)
ENGINE_PREFILL_STEPS = Gauge(
    "aigc_engine_prefill_steps",
    "Steps that prefilled joining jobs (a subset of aigc_engine_steps).",
    ENGINE_LABELS,
    multiprocess_mode="livesum",
)
ENGINE_PREFILL_STEP_SECONDS = Gauge(
    "aigc_engine_prefill_step_seconds",
    "Seconds of the steps that prefilled joining jobs (a part of aigc_engine_step_seconds).",
    ENGINE_LABELS,
    multiprocess_mode="livesum",
)
ENGINE_EMIT_SECONDS = Gauge(
    "aigc_engine_emit_seconds",
    "Seconds the engine spent handing its outputs on (to the worker, from an engine process).",
    ENGINE_LABELS,
    multiprocess_mode="livesum",
)
ENGINE_LOOP_SECONDS = Gauge(
    "aigc_engine_loop_seconds",
    "Seconds from each step's start to the next one's while jobs ran: the steps and everything the loop did "
    "between them.",
    ENGINE_LABELS,
    multiprocess_mode="livesum",
)
ENGINE_TOKENS = Gauge(
    "aigc_engine_tokens", "Tokens the engine produced since it started.", ENGINE_LABELS, multiprocess_mode="livesum"
)
ENGINE_ITEMS = Gauge(
    "aigc_engine_items", "Jobs the engine finished since it started.", ENGINE_LABELS, multiprocess_mode="livesum"
)
ENGINE_DRAINING = Gauge(
    "aigc_engine_draining",
    "1 while another model waits for this engine's memory: it takes no new jobs and empties (hardware.cache).",
    ENGINE_LABELS,
    multiprocess_mode="livesum",
)


def multiprocess_registry(*first: Any) -> CollectorRegistry:
    """A registry reading every process's samples from the shared directory (after running `first` collectors)."""
    registry = CollectorRegistry()
    for collector in first:
        registry.register(collector)
    multiprocess.MultiProcessCollector(registry, path=str(MULTIPROC_DIR))
    return registry


class QueueCollector:
    """Read at scrape time by the web: jobs waiting per queue (the database's truth), the age of the oldest,
    running jobs, and what the broker holds (one doorbell stands for every job of its queue submitted before a
    worker answers it, so a backlog shows as a few messages; none while jobs wait means a lost doorbell, which the
    sweep rings again)."""

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily("aigc_queue_depth", "Jobs queued (not yet started), per queue.", labels=["queue"])
        oldest = GaugeMetricFamily(
            "aigc_queue_oldest_age_seconds", "How long the oldest queued job has waited.", labels=["queue"]
        )
        running = GaugeMetricFamily("aigc_jobs_running", "Jobs running now, per queue.", labels=["queue"])
        broker = GaugeMetricFamily(
            "aigc_broker_queue_length", "Messages waiting in the broker, per queue.", labels=["queue"]
        )
        with contextlib.suppress(DatabaseError):  # the database is down: /readyz says so; the rest still answers
            self._from_database(depth, oldest, running)
        for queue, length in broker_queue_lengths(
            sorted(set(settings.AIGC_QUEUES) | {settings.CELERY_TASK_DEFAULT_QUEUE})
        ):
            broker.add_metric([queue], length)
        yield from (depth, oldest, running, broker)

    def _from_database(self, depth: Any, oldest: Any, running: Any) -> None:
        from django.db.models import Count, Min
        from django.utils import timezone

        from aigc_saas.jobs.models import Job

        now = timezone.now()
        queues = set(settings.AIGC_QUEUES) | {settings.CELERY_TASK_DEFAULT_QUEUE}
        for row in Job.objects.filter(state="queued").values("queue").annotate(n=Count("pk"), first=Min("created_at")):
            queues.discard(row["queue"])
            depth.add_metric([row["queue"]], row["n"])
            oldest.add_metric([row["queue"]], (now - row["first"]).total_seconds())
        for queue in sorted(queues):  # queues with nothing waiting report 0, so alerts see them
            depth.add_metric([queue], 0)
            oldest.add_metric([queue], 0)
        for row in Job.objects.filter(state="running").values("queue").annotate(n=Count("pk")):
            running.add_metric([row["queue"]], row["n"])


def broker_queue_lengths(queues: list[str]) -> list[tuple[str, int]]:
    """LLEN of each queue's Redis lists (kombu keeps one list per priority step: `q`, `q\\x06\\x163`, …)."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        out = []
        for queue in queues:
            keys = [queue, *(f"{queue}\x06\x16{step}" for step in (3, 6, 9))]
            out.append((queue, sum(int(client.llen(key)) for key in keys)))
        return out
    except redis.RedisError:
        return []  # the broker is down: /readyz says so; the other metrics still answer
    finally:
        client.close()


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Every web process's samples plus the queue gauges, in Prometheus text format."""
    token = settings.AIGC_METRICS_TOKEN
    if token and request.headers.get("Authorization", "") != f"Bearer {token}":
        return HttpResponse("metrics need `Authorization: Bearer <AIGC_METRICS_TOKEN>`\n", status=401)
    registry = multiprocess_registry()
    registry.register(QueueCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
