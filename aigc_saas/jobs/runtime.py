"""Worker side: keep loaded plugins in the model cache and run a claimed job through one."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import asdict

from aigc_saas.jobs import services
from aigc_saas.jobs.models import Job
from aigc_saas.plugins.models import PluginRecord
from aigc_saas.plugins.services import config_fingerprint, effective_config, registry
from generators.base import GenerationContext, GenerationResult, Generator, GeneratorConfig
from generators.errors import GeneratorError, JobCancelled
from generators.registry import PluginInfo
from hardware import DeviceChoice, DeviceUnavailable, detect_devices, select_device
from hardware.cache import DoesNotFit, ModelCache, default_budgets
from hardware.oom import DeviceOutOfMemory, plan_memory_mode, run_with_oom_retry

log = logging.getLogger(__name__)


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


_cache: ModelCache | None = None


def model_cache() -> ModelCache:
    """This process's cache, made on first use so neither the web process nor a prefork parent imports torch."""
    global _cache
    if _cache is None:
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


def loaded_generator(info: PluginInfo, config: GeneratorConfig, device: DeviceChoice) -> Generator:
    """The plugin loaded once per (plugin, config, device, dtype, memory mode) and kept in the model cache."""
    key = (
        info.name,
        info.version,
        config_fingerprint(config),  # secrets included: a new token loads a new plugin instance
        device.device,
        device.dtype,
        device.low_memory,
    )

    def load() -> Generator:
        generator = info.cls(config)
        generator.setup(device)
        return generator

    return model_cache().get_or_load(
        key, load, device=device.device, estimate_bytes=info.cls.needs.memory_mb * 1024 * 1024
    )


def execute_job(job_id: str) -> str:
    """Claim, run and record one job; returns the final state. A second delivery does nothing."""
    job = services.claim_job(job_id, worker_name())
    if job is None:
        return "skipped"
    try:
        info, config, device = resolve(job)
        params = info.cls.validate_params(job.params)
        ctx = JobContext(job, device)
        ctx.raise_if_cancelled()

        def run(choice: DeviceChoice) -> GenerationResult:
            ctx.device = choice
            Job.objects.filter(pk=job.pk).update(device=choice.device)
            return loaded_generator(info, config, choice).generate(params, ctx)

        result = run_with_oom_retry(run, device, cache=model_cache())
        services.finish_job(job, result)
    except JobCancelled as exc:
        services.mark_cancelled(job, exc.message)
    except GeneratorError as exc:
        services.fail_job(job, exc.code, exc.message)
    except (DeviceUnavailable, DoesNotFit, DeviceOutOfMemory) as exc:
        services.fail_job(job, exc.code, getattr(exc, "message", str(exc)))
    except Exception as exc:  # noqa: BLE001 - the job records the failure, the worker keeps serving
        log.exception("job %s failed", job_id)
        services.fail_job(job, "internal_error", f"{type(exc).__name__}: {exc}")
    finally:
        heartbeat(job.queue)
    job.refresh_from_db()
    return job.state


def heartbeat(queue: str | None = None) -> None:
    """Record this worker's devices and model cache where the admin and `hardware_report` read them."""
    try:
        services.record_worker_status(
            worker_name(), devices=[asdict(d) for d in detect_devices()], cache=model_cache().snapshot(), queue=queue
        )
    except Exception:  # noqa: BLE001 - a report must never break a job
        log.exception("could not record the worker status")
