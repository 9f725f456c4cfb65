"""Worker side: keep loaded plugins in the model cache and run a claimed job through one."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import asdict

from pydantic import BaseModel

from aigc_saas.assets.inputs import attach_inputs
from aigc_saas.jobs import services
from aigc_saas.jobs.models import Job, JobState
from aigc_saas.plugins.models import PluginRecord
from aigc_saas.plugins.services import config_fingerprint, effective_config, registry
from generators.base import BatchItem, GenerationContext, GenerationResult, Generator, GeneratorConfig
from generators.errors import GeneratorError, JobCancelled, ParamsInvalid
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


def claim_companions(
    job: Job, info: PluginInfo, generator: Generator, params: BaseModel
) -> list[tuple[Job, BaseModel]]:
    """Queued jobs that may share `job`'s pass: same plugin, model and queue, and an equal `batch_key`."""
    size = type(generator).max_batch_size
    key = generator.batch_key(params) if size > 1 else None
    if key is None:
        return []
    candidates = Job.objects.filter(
        state=JobState.QUEUED, generator=job.generator, model_id=job.model_id, queue=job.queue
    ).exclude(pk=job.pk)
    chosen = []
    for candidate in candidates.order_by("created_at")[: size * 4]:
        try:
            if generator.batch_key(info.cls.validate_params(candidate.params)) == key:
                chosen.append(candidate.pk)
        except ParamsInvalid:
            continue  # its own delivery will fail it with the reason
        if len(chosen) == size - 1:
            break
    # Their own broker messages arrive later and find them claimed: a second delivery does nothing.
    claimed = services.claim_jobs(chosen, worker_name())
    return [(companion, attach_inputs(companion, info.cls.validate_params(companion.params))) for companion in claimed]


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


def execute_job(job_id: str) -> str:
    """Claim, run and record a job (with compatible queued ones, where its plugin batches); a second delivery
    does nothing. Returns the job's final state."""
    job = services.claim_job(job_id, worker_name())
    if job is None:
        return "skipped"
    batch: list[tuple[Job, BaseModel]] = []
    try:
        info, config, device = resolve(job)
        batch.append((job, attach_inputs(job, info.cls.validate_params(job.params))))
        JobContext(job, device).raise_if_cancelled()

        def run(choice: DeviceChoice) -> list[GenerationResult | GeneratorError]:
            generator = loaded_generator(info, config, choice)
            if len(batch) == 1:
                batch.extend(claim_companions(job, info, generator, batch[0][1]))
            # The version that runs the job is the worker's, which may differ from the web's during an upgrade.
            Job.objects.filter(pk__in=[j.pk for j, _ in batch]).update(
                device=choice.device, plugin_version=info.version
            )
            items = [BatchItem(params=p, ctx=JobContext(j, choice)) for j, p in batch]
            if len(items) == 1:
                return [generator.generate(items[0].params, items[0].ctx)]
            results = generator.generate_batch(items)
            if len(results) != len(items):
                raise GeneratorError(
                    f"plugin {info.name!r} returned {len(results)} results for a batch of {len(items)} jobs",
                    code="plugin_contract_broken",
                )
            return results

        outcomes: list[GenerationResult | BaseException] = list(run_with_oom_retry(run, device, cache=model_cache()))
    except Exception as exc:  # noqa: BLE001 - every job of the batch records the failure; the worker keeps serving
        outcomes = [exc] * max(len(batch), 1)
    for (each, _), outcome in zip(batch or [(job, None)], outcomes, strict=True):
        record_outcome(each, outcome)
    heartbeat(job.queue)
    job.refresh_from_db()
    return job.state


def heartbeat(queue: str | None = None) -> None:
    """Record this worker's devices and model cache where the admin and `hardware_report` read them."""
    try:
        services.record_worker_status(
            worker_name(),
            devices=[asdict(d) for d in detect_devices()],
            cache=model_cache().snapshot(),
            queues=[q for q in os.environ.get("AIGC_WORKER_CONSUMES", "").split(",") if q] + ([queue] if queue else []),
        )
    except Exception:  # noqa: BLE001 - a report must never break a job
        log.exception("could not record the worker status")
