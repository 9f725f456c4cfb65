"""Celery worker hooks: the metrics exporter in the worker's parent, samples in each process that runs jobs,
job context on log lines, and no library progress bars."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from aigc_saas.observability import recording
from aigc_saas.observability.logging import bind_job, quiet_progress_bars

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 10.0
SAMPLE_GAP_SECONDS = 0.1  # at most ten samples a second, however many tasks end
_sampler_started = False
_stop = threading.Event()
_sample_soon = threading.Event()  # set after each task: sample now (or once the gap since the last has passed)
_bound: dict[str, Any] = {}


class SampleOnScrape:
    """A collector that refreshes this process's cache, device and engine gauges when Prometheus scrapes, so the
    answer is current (used where jobs run in the exporter's own process: a threads or solo pool)."""

    def collect(self) -> list:
        recording.sample_worker()
        return []


def start_exporter(sender: Any = None, **kwargs: Any) -> None:
    """`worker_ready` (sent in the parent): serve every process's samples on AIGC_METRICS_PORT (0: off)."""
    pool = getattr(sender, "pool", None)  # the consumer's pool: jobs run in this process unless it forks
    in_process = pool is not None and "prefork" not in type(pool).__module__
    if in_process:
        start_sampler()
    port = settings.AIGC_METRICS_PORT
    if not port:
        return
    from prometheus_client import start_http_server

    from aigc_saas.observability.metrics import multiprocess_registry

    try:
        start_http_server(port, registry=multiprocess_registry(*([SampleOnScrape()] if in_process else [])))
    except OSError as exc:  # another worker on this host has the port: serve jobs anyway, say why
        log.warning("worker metrics not exported: port %s (AIGC_METRICS_PORT) is not free: %s", port, exc)
        return
    log.info("worker metrics at http://0.0.0.0:%s/metrics", port)


def start_sampler(**kwargs: Any) -> None:
    """`worker_process_init` (a prefork child) or a non-forking pool: sample now and every SAMPLE_SECONDS."""
    global _sampler_started
    quiet_progress_bars()
    if _sampler_started:
        return
    _sampler_started = True
    recording.sample_worker()

    def loop() -> None:
        while not _stop.is_set():
            _sample_soon.wait(SAMPLE_SECONDS)
            _sample_soon.clear()
            recording.sample_worker()
            _stop.wait(SAMPLE_GAP_SECONDS)

    threading.Thread(target=loop, name="aigc-metrics-sampler", daemon=True).start()


def process_shutdown(**kwargs: Any) -> None:
    """`worker_process_shutdown`: a prefork child leaves by os._exit, so atexit never runs there."""
    _stop.set()
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())


def task_prerun(task_id: str = "", task: Any = None, args: Any = None, **kwargs: Any) -> None:
    """Bind the job to log lines while `aigc.run_job` runs (the task's argument is the job id)."""
    if getattr(task, "name", "") != "aigc.run_job" or not args:
        return
    context = bind_job(args[0], recording.tenant_of_job(str(args[0])) or "")
    context.__enter__()
    _bound[task_id] = context


def task_postrun(task_id: str = "", **kwargs: Any) -> None:
    context = _bound.pop(task_id, None)
    if context is not None:
        context.__exit__(None, None, None)
    close_old_connections()  # CONN_MAX_AGE rules, as after a web request (settings.CELERY_DB_REUSE_MAX)
    if _sampler_started:
        _sample_soon.set()  # the sampler thread refreshes the gauges: a batch of tasks ending costs one sample
    else:
        recording.sample_worker()
