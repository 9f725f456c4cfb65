"""Worker side: keep loaded plugins in the model cache and run a claimed job through one."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

from django.conf import settings

from aigc_saas.jobs import services
from aigc_saas.jobs.models import Job
from aigc_saas.plugins.models import PluginRecord
from aigc_saas.plugins.services import effective_config, registry
from generators.base import GenerationContext, Generator
from generators.errors import GeneratorError, JobCancelled
from hardware import DeviceChoice, DeviceUnavailable, select_device
from hardware.cache import DoesNotFit, ModelCache
from hardware.memory import module_bytes

log = logging.getLogger(__name__)

WORKER_NAME = f"{socket.gethostname()}:{__import__('os').getpid()}"
model_cache = ModelCache(settings.AIGC_MODEL_CACHE_BUDGETS)


class JobContext(GenerationContext):
    """Progress and cancellation backed by the Job row, written at most every `interval` seconds."""

    def __init__(self, job: Job, device: DeviceChoice, interval: float = 0.5) -> None:
        self.job_id = str(job.pk)
        self.device = device
        self.logger = log
        self._interval = interval
        self._last_write = 0.0
        self._last_check = 0.0
        self._cancelled = False

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last_write >= self._interval or fraction >= 1.0:
            self._last_write = now
            services.report_progress(self.job_id, fraction, message)

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_check >= self._interval:
            self._last_check = now
            self._cancelled = services.cancel_requested(self.job_id)
        return self._cancelled


def load_generator(job: Job) -> tuple[Generator, DeviceChoice]:
    """The plugin for `job`, loaded once per (plugin, config, device) and kept in the model cache."""
    info = registry().get(job.generator)
    record = PluginRecord.objects.get(name=job.generator)
    config = effective_config(record, info.cls)
    if job.model_id and job.model_id != config.model_id:
        config = config.model_copy(update={"model_id": job.model_id})
    device = select_device(info.cls.needs)
    key = (info.name, info.version, json.dumps(config.model_dump(mode="json"), sort_keys=True), device.device)

    def load() -> Generator:
        generator = info.cls(config)
        generator.setup(device)
        return generator

    generator = model_cache.get_or_load(
        key, load, device=device.device, estimate_bytes=info.cls.needs.memory_mb * 1024 * 1024, measure=module_bytes
    )
    return generator, device


def execute_job(job_id: str) -> str:
    """Claim, run and record one job; returns the final state. A second delivery does nothing."""
    job = services.claim_job(job_id, WORKER_NAME)
    if job is None:
        return "skipped"
    try:
        generator, device = load_generator(job)
        Job.objects.filter(pk=job.pk).update(device=device.device)
        params = generator.validate_params(job.params)
        ctx = JobContext(job, device)
        ctx.raise_if_cancelled()
        result = generator.generate(params, ctx)
        services.finish_job(job, result)
    except JobCancelled as exc:
        services.mark_cancelled(job, exc.message)
    except GeneratorError as exc:
        services.fail_job(job, exc.code, exc.message)
    except (DeviceUnavailable, DoesNotFit) as exc:
        services.fail_job(job, exc.code, str(exc))
    except Exception as exc:  # noqa: BLE001 - the job records the failure, the worker keeps serving
        log.exception("job %s failed", job_id)
        services.fail_job(job, "internal_error", f"{type(exc).__name__}: {exc}")
    job.refresh_from_db()
    return job.state


def cache_report() -> dict[str, Any]:
    return {"worker": WORKER_NAME, **model_cache.snapshot()}
