"""Worker side: claim a job fairly, hand it to the engine of its loaded plugin, record the outcome."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from dataclasses import asdict
from typing import Any

from django.conf import settings

from aigc_saas import rows
from aigc_saas.assets.inputs import attach_inputs
from aigc_saas.jobs import capacity, doorbell, engine_host, events, services
from aigc_saas.jobs.engine_host import release_connection
from aigc_saas.jobs.models import Job, JobState
from aigc_saas.jobs.signals import job_queued
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
    record = rows.one(PluginRecord, name=job.generator)
    if record is None:
        raise PluginRecord.DoesNotExist(f"no plugin record {job.generator!r}")
    config = effective_config(record, info.cls)
    if job.model_id and job.model_id != config.model_id:
        config = config.model_copy(update={"model_id": job.model_id})
    device = plan_memory_mode(select_device(info.cls.needs), info.cls.needs, cache=model_cache())
    return info, config, device


# Outcomes of the worker's side, not of the job: its engine stopped under it (the engine process died, the engine
# thread failed). The job goes back to its queue for another attempt, as a lost worker's does.
RETRIED_CODES = frozenset({"engine_stopped"})


def record_outcome(job: Job, outcome: GenerationResult | BaseException) -> None:
    if isinstance(outcome, JobCancelled):
        services.mark_cancelled(job, outcome.message)
    elif isinstance(outcome, GeneratorError) and outcome.code in RETRIED_CODES:
        services.retry_job(job, outcome.code, outcome.message)
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


# claim_fitting reads its rows back by worker name and start time: one claim at a time in a process.
_claiming = threading.Lock()

# What a claim may take of a (generator, model) with no engine loaded here: its first job loads it, and the rest
# wait in the queue, in the database, where any worker can take them (they are rung here when it has loaded).
NO_ENGINE_ROOM = 1

# Queues whose last claim here left jobs for want of room (`services.Claim.held`), each rung once when rows free
# in this process: an outcome recorded, an engine that loaded taking its first jobs. A claim adds its queue under
# `_claiming` before it reads the engines, so rows freed after that read find the queue owed; the stale-job sweep
# (`services.requeue_stale_jobs`) stays the backstop for a ring lost anyway.
_owed: set[str] = set()
# Jobs claimed here that no engine holds yet (resolving, loading their plugin): job id -> (generator, model). An
# engine's `running` and `waiting` count only what was handed to it, so a claim counts these too, or each doorbell
# answered during a model load would take one more job to wait here for it.
_starting: dict[str, tuple[str, str]] = {}
_owed_lock = threading.Lock()  # `_owed` and `_starting`; never held while ringing or querying


def execute_job(job_id: str, queue: str | None = None) -> str:
    """Answer one doorbell of `queue`: claim the fairest jobs there (this one first when its tenant's turn
    allows), only as many of each engine (generator and model) as this process can start now (`claim_room`), at
    most AIGC_CLAIM_BATCH, run them together and record each outcome as it comes.

    A doorbell stands for every job of the queue committed before it is answered (aigc_saas.jobs.doorbell), so
    none may be dropped: a claim that stopped at AIGC_CLAIM_BATCH with jobs left that fit rings again at once
    (another thread or worker claims them); one that left jobs because their engine is full here owes the
    queue a ring when rows free in this process (`ring_owed`), and does not ring now, since a worker whose
    engines are full would only claim jobs to keep them waiting, leased to it, while another could run them.

    Returns the first claimed job's final state, or "skipped" (nothing claimable, or nothing that fits: the
    jobs stay queued). `job_id` may be empty (a ring that names no job)."""
    if queue is None:
        queue = Job.objects.filter(pk=job_id).values_list("queue", flat=True).first()
        if queue is None:
            return "skipped"
    doorbell.answered(queue)  # before the queue is read: a job committed from now on rings anew
    with _claiming:
        with _owed_lock:
            _owed.add(queue)  # before the engines are read: rows freed from now on ring this queue
        engines = engine_host.snapshot()
        claim = services.claim_fitting(
            queue,
            worker_name(),
            preferred=job_id or None,
            limit=settings.AIGC_CLAIM_BATCH,
            room=claim_room(engines),
            default_room=NO_ENGINE_ROOM,
            step_seconds=step_seconds(engines),
        )
        with _owed_lock:
            if not claim.held:  # nothing it read waits for room (a row freed since the add rang it: harmless)
                _owed.discard(queue)
            _starting.update((str(job.pk), (job.generator, job.model_id)) for job in claim.jobs)
    jobs = claim.jobs
    try:
        if claim.more:  # stopped at AIGC_CLAIM_BATCH with room left: another thread or worker claims the rest
            job_queued.send(sender=Job, job_id=None, queue=queue, coalesce=True)
        if not jobs:
            return "skipped"
        ready, failed = _prepare(jobs)
        try:
            for job, outcome in itertools.chain(failed, engine_host.run_many(ready)):  # each as it ends
                release_connection()
                if outcome is not None:  # None: a newer attempt owns the job; this one writes nothing
                    record_outcome(job, outcome)
                jobs_left(job)  # its rows are free: a queue owed a ring gets it
        except Exception as exc:  # noqa: BLE001 - an unexpected failure fails the jobs still running
            for item in ready:
                if item.job.state == JobState.RUNNING:
                    record_outcome(item.job, exc)
    finally:
        if jobs:  # whatever happened, none of them holds rows here any more
            jobs_left(*jobs)
    first = jobs[0]
    if first.state == JobState.RUNNING:  # a recorded outcome read the row back already
        first.refresh_from_db()
    return first.state


def claim_room(engines: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """How many more jobs of each engine, (generator, model), this process can start now: its free rows
    (max_rows less running and waiting, summed over devices), less the jobs claimed here that no engine holds yet.
    One not listed has no engine here (`NO_ENGINE_ROOM`, less its jobs claimed): free rows of one model start no
    job of another, which would load its own engine beside it. A draining engine (another model waits for its
    memory, hardware.cache) has no room: it empties, and its jobs wait in the queue until it is back."""
    room: dict[tuple[str, str], int] = {}
    for e in engines:
        key = (e["generator"], e["model_id"])
        free = 0 if e.get("draining") else max(0, e["max_rows"] - e["running"] - e["waiting"])
        room[key] = room.get(key, 0) + free
    with _owed_lock:
        starting = list(_starting.values())
    for key in starting:
        room[key] = max(0, room.get(key, NO_ENGINE_ROOM) - 1)
    return room


def handed_over(job_ids: list[Any], new_engine: bool) -> None:
    """The engines hold these jobs now (their rows count in `engine_host.snapshot`); `new_engine`: an engine took
    its first jobs (it has just loaded), so jobs left waiting for it may fit."""
    with _owed_lock:
        for pk in job_ids:
            _starting.pop(str(pk), None)
    if new_engine:
        ring_owed()


def jobs_left(*jobs: Job) -> None:
    """These jobs are over in this process (or never reached an engine): what they held is free."""
    with _owed_lock:
        for job in jobs:
            _starting.pop(str(job.pk), None)
    ring_owed()


def ring_owed() -> None:
    """Ring once each queue a claim here left jobs in for want of room (coalesced: a doorbell already on its way
    stands for them); the claim it brings takes what fits now, or owes the queue again."""
    with _owed_lock:
        queues = sorted(_owed)
        _owed.clear()
    for queue in queues:
        try:
            job_queued.send(sender=Job, job_id=None, queue=queue, coalesce=True)
        except Exception:  # noqa: BLE001 - a ring must never break a job; the sweep re-rings queued jobs
            log.exception("could not ring queue %s for the jobs it has waiting", queue)


def step_seconds(engines: list[dict[str, Any]]) -> dict[str, float]:
    """Each generator's mean engine step without a prefill in this process, as measured so far (the engine's own
    `decode_step_seconds`): what a job's `steps` cost in time when a claim orders a full queue (jobs.ordering)."""
    totals: dict[str, list[float]] = {}
    for e in engines:
        steps = e.get("steps_total", 0) - e.get("prefill_steps_total", 0)
        if steps > 0:
            total = totals.setdefault(e["generator"], [0.0, 0.0])
            total[0] += e["step_seconds_total"] - e.get("prefill_step_seconds_total", 0.0)
            total[1] += steps
    return {name: seconds / steps for name, (seconds, steps) in totals.items()}


def _prepare(jobs: list[Job]) -> tuple[list[engine_host.Claimed], list[tuple[Job, Any]]]:
    """Resolve each claimed job (once per generator and model) and record its device: (ready, failed)."""
    resolved: dict[tuple[str, str], Any] = {}
    ready: list[engine_host.Claimed] = []
    failed: list[tuple[Job, Any]] = []
    for job in jobs:
        key = (job.generator, job.model_id)
        try:
            if key not in resolved:
                try:
                    resolved[key] = resolve(job)
                except Exception as exc:  # noqa: BLE001 - every job of this generator and model fails alike
                    resolved[key] = exc
            if isinstance(resolved[key], Exception):
                raise resolved[key]
            info, config, device = resolved[key]
            params = attach_inputs(job, info.cls.validate_params(job.params))
            ready.append(engine_host.Claimed(job, info, config, device, params))
        except Exception as exc:  # noqa: BLE001 - the job records the failure; the others go on
            failed.append((job, exc))
    services.record_placement([(item.job, item.device.device, item.info.version) for item in ready])
    return ready, failed


def heartbeat(queue: str | None = None) -> None:
    """Record this worker's devices, model cache and engines where the admin, `/readyz` and submission read them."""
    try:
        capacity.record_worker_status(
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

    if settings.AIGC_ENGINE_PROCESS:
        threading.Thread(target=engine_host.warm_engine_processes, name="aigc-engine-warm", daemon=True).start()

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
