"""Every state change of a Job happens here: submit, dispatch, claim, progress, finish, fail, cancel, requeue."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from aigc_saas import rows
from aigc_saas.accounts.models import ApiKey, Tenant
from aigc_saas.assets.inputs import validate_asset_params
from aigc_saas.errors import Conflict, InvalidInput, NotFound
from aigc_saas.jobs import candidates, capacity, events, submission
from aigc_saas.jobs.models import TERMINAL_STATES, Artifact, Job, JobState
from aigc_saas.jobs.ordering import fair_pick, left_over
from aigc_saas.jobs.signals import job_finished, job_queued
from aigc_saas.plugins.services import effective_config, enabled_plugin, queue_for
from aigc_saas.validation import storable
from aigc_saas.webhooks.policy import check_webhook_url
from generators.base import GenerationResult

log = logging.getLogger(__name__)


def submit_job(
    tenant: Tenant,
    generator: str,
    params: Any,
    *,
    model: str | None = None,
    api_key: ApiKey | None = None,
    origin: dict[str, Any] | None = None,
    webhook_url: str = "",
    idempotency_key: str = "",
    batch_id: Any = None,
) -> Job:
    """Validate against the plugin's models, record the job as queued, and ring the broker after commit.

    With an `idempotency_key`, the same key and body return the job first made with them (no second job);
    the same key with another body is a 409 `idempotency_key_reused`.
    """
    request_hash = submission.request_hash(generator, params, model, webhook_url) if idempotency_key else ""
    if idempotency_key and (earlier := submission.idempotent_replay(tenant, idempotency_key, request_hash)):
        return earlier
    record, info = enabled_plugin(generator)
    config = effective_config(record, info.cls)
    model_id = config.model_id
    if model:
        if model != config.model_id and model not in config.allowed_models:
            raise InvalidInput(
                f"`model`: {model!r} is not allowed for {generator!r}; allowed: {[config.model_id, *config.allowed_models]}",
                code="model_not_allowed",
            )
        model_id = model
    clean, steps = submission.validated_params(info.cls, record.default_params or {}, params)
    validate_asset_params(tenant, info.cls, clean)  # asset ids: this tenant's, of accepted types (issue 12)
    capacity.check_fits_engines(generator, model_id, clean)
    queue = queue_for(record, info)
    webhook_url = check_webhook_url(webhook_url)
    try:
        with transaction.atomic():
            capacity.enforce_quota(tenant)
            job = Job(
                tenant=tenant,
                api_key=api_key,
                generator=generator,
                plugin_version=info.version,
                model_id=model_id,
                params=clean,
                steps=steps,
                queue=queue,
                origin=origin or {},
                webhook_url=webhook_url,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                batch_id=batch_id,
                # The first ring is written with the row (one write fewer per submission); a ring the broker
                # refuses takes it back (`ring_refused`), so the sweep still finds the job unrung.
                dispatched_at=timezone.now(),
                dispatch_count=1,
            )
            rows.insert(job)  # Job.objects.create's save, without its compiler (aigc_saas.rows)
            _after_commit_publish(job.pk, "state", {"state": JobState.QUEUED})
            transaction.on_commit(
                lambda: job_queued.send(sender=Job, job_id=job.pk, queue=queue, counted=True, coalesce=True)
            )
    except IntegrityError:
        if idempotency_key and (earlier := submission.idempotent_replay(tenant, idempotency_key, request_hash)):
            return earlier  # a concurrent request with the same key won the race
        raise
    return job


def mark_dispatched(job_id: Any) -> None:
    """The broker took the job's doorbell (called by whoever rang it)."""
    Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(
        dispatched_at=timezone.now(), dispatch_count=F("dispatch_count") + 1
    )


def ring_refused(job_id: Any) -> None:
    """The broker did not take a ring that the job's row already counted (a new job's first)."""
    Job.objects.filter(pk=job_id, state=JobState.QUEUED, dispatch_count__gt=0).update(
        dispatched_at=None, dispatch_count=F("dispatch_count") - 1
    )


def get_job(tenant: Tenant, job_id: Any) -> Job:
    """A job of this tenant; another tenant's id is indistinguishable from a missing one."""
    job = rows.one(Job, id=job_id, tenant_id=tenant.pk)
    if job is None:
        raise NotFound(f"`job_id`: no job {job_id} in this tenant")
    return job


def _claimed(now: Any, worker: str, device: str) -> dict[str, Any]:
    """What a claim writes: running, a fresh lease, and one more attempt (which fences every older attempt's
    later writes)."""
    return {
        "state": JobState.RUNNING,
        "started_at": now,
        "attempts": F("attempts") + 1,
        "worker": worker,
        "device": device,
        "lease_expires_at": now + timedelta(seconds=settings.AIGC_LEASE_SECONDS),
        "progress": 0.0,
        "progress_message": "started",
    }


def _take(pk: Any, state: str, attempts: int, worker: str, device: str) -> Job | None:
    """Compare-and-set one claim: the attempt number rises, and fences every later write of an older attempt."""
    now = timezone.now()
    taken = (
        Job.objects.filter(pk=pk, state=state, attempts=attempts)
        .filter(candidates.claimable(now))
        .update(**_claimed(now, worker, device))
    )
    if not taken:
        return None
    events.publish(pk, "state", {"state": JobState.RUNNING, "attempt": attempts + 1})
    return Job.objects.get(pk=pk)


def claim_job(job_id: Any, worker: str, device: str = "") -> Job | None:
    """Claim this job if it is queued or its lease lapsed; a second delivery of a running job does nothing."""
    row = Job.objects.filter(candidates.claimable(timezone.now()), pk=job_id).values_list("state", "attempts").first()
    return _take(job_id, row[0], row[1], worker, device) if row else None


def claim_batch(queue: str, worker: str, **options: Any) -> list[Job]:
    """The jobs `claim_fitting(queue, worker, **options)` claimed, without what it says about those it left."""
    return claim_fitting(queue, worker, **options).jobs


@dataclass
class Claim:
    """What one claim took, and why it left what it left: `held`, claimable jobs of an engine the worker had no
    room for (they wait until its rows free); `more`, the claim stopped at its `limit` and jobs it had room for
    may be left."""

    jobs: list[Job]
    held: bool = False
    more: bool = False


def claim_fitting(
    queue: str,
    worker: str,
    *,
    preferred: Any = None,
    limit: int = 1,
    device: str = "",
    step_seconds: dict[str, float] | None = None,
    room: dict[tuple[str, str], int] | None = None,
    default_room: int = 1,
) -> Claim:
    """Claim up to `limit` jobs of `queue` in fair order, in one compare-and-set statement, and at most `room`
    of each (generator, model) engine (one not listed: `default_room`; `room` None: any number up to `limit`).

    Fair order (aigc_saas.jobs.ordering): the most urgent job of the tenant with the fewest running jobs there,
    again and again, counting the jobs already picked. A broker message is a doorbell for its queue: the job it
    names is taken when its tenant's turn allows, otherwise another tenant's job is, so one tenant's backlog
    cannot starve another's. A message stands for every job of its queue committed before a worker answers it
    (aigc_saas.jobs.doorbell); one that finds its job claimed already claims the next.

    Room: a queue holds the jobs of several generators (every plugin on a device shares its queue), and a
    worker's free text rows start no image job, nor a job of another text model. A claimed job is running on this
    worker and leased to it, so one its engines cannot start would wait in this worker while another with free
    rows could run it now: a job whose engine has no room is left queued, and the result says so (`held`), for
    the caller to claim again when rows free.

    Urgent: least laxity first. With `step_seconds` (each generator's measured engine step, from the claiming
    worker), jobs submitted together go longest first, so a full engine's batch stays full to its end instead of
    ending on a few long rows; a short job waits at most the longer job's run time more than it would oldest
    first. Without a measured step (no engine yet), or with equal steps, it is oldest first.

    Each job is claimed as `claim_job` claims one (its attempt number rises, which fences every later write of
    an older attempt); taking several at once lets a worker's engine start them together, one prefill and one
    batch, instead of one claim, one prefill and one extra partial step per arrival. Callers in one process
    must not claim concurrently (the worker holds `runtime._claiming`): the rows are read back by worker and
    start time.
    """
    for _ in range(5):  # another worker may win every candidate: pick again
        now = timezone.now()
        found = candidates.read(queue, now, room, default_room)
        if not found:
            return Claim([])
        running = (
            {}  # one tenant waiting: its oldest jobs (the one rung for first) are the fair pick, no count needed
            if len({c[1] for c in found}) == 1
            else dict(
                Job.objects.filter(queue=queue, state=JobState.RUNNING, lease_expires_at__gte=now)
                .values("tenant_id")
                .annotate(n=Count("pk"))
                .values_list("tenant_id", "n")
            )
        )
        chosen = fair_pick(found, running, preferred, limit, step_seconds or {}, room, default_room)
        held, more = left_over(found, chosen, limit, room, default_room, candidates.CLAIM_CANDIDATES)
        if not chosen:  # every generator waiting here is full in this worker
            return Claim([], held=held)
        picked = [pk for pk, *_ in chosen]
        # Claimable at the moment of the update, whatever happened since the read: a job another worker took
        # meanwhile is running under a live lease and is left alone.
        taken = (
            Job.objects.filter(pk__in=picked).filter(candidates.claimable(now)).update(**_claimed(now, worker, device))
        )
        if not taken:
            continue
        # This claim's rows: this worker, this start time (claims in one process are one at a time).
        mine = {
            str(job.pk): job
            for job in rows.all(Job, id__in=picked, state=JobState.RUNNING, worker=worker, started_at=now)
        }
        jobs = [mine[str(pk)] for pk in picked if str(pk) in mine]  # in the fair order
        if len(jobs) < taken:  # this worker stopped between the two statements (SIGSTOP, a long GC pause): lost
            log.warning(
                "%d of the %d jobs this claim took were taken over by another attempt or ended before it read "
                "them back; it leaves them alone",
                taken - len(jobs),
                taken,
            )
        # `attempt` > 1: the job starts over (its worker was lost); a stream's text so far is void.
        events.publish_many((job.pk, "state", {"state": JobState.RUNNING, "attempt": job.attempts}) for job in jobs)
        return Claim(jobs, held=held, more=more)
    return Claim([])


def record_placement(placed: list[tuple[Job, str, str]]) -> None:
    """Where each claimed job runs: (job, device, plugin version), each fenced by its attempt. One statement
    per job, its SQL written once (aigc_saas.rows), in one transaction: an OR of one fenced lookup per job
    cost the ORM's compiler more than all of them together."""
    if not placed:
        return
    with transaction.atomic():
        for job, device, version in placed:
            rows.update(Job, {"device": device, "plugin_version": version}, pk=job.pk, attempts=job.attempts)


def renew_lease(job: Job) -> bool:
    """Extend the lease of the attempt `job` holds; False when that attempt no longer owns the job."""
    return bool(
        Job.objects.filter(pk=job.pk, state=JobState.RUNNING, attempts=job.attempts).update(
            lease_expires_at=timezone.now() + timedelta(seconds=settings.AIGC_LEASE_SECONDS)
        )
    )


def report_progress(job: Job, fraction: float, message: str = "") -> None:
    """A coarse progress write (events carry the fine one): only forward, only by the attempt that runs it."""
    fraction = max(0.0, min(1.0, float(fraction)))
    Job.objects.filter(pk=job.pk, state=JobState.RUNNING, attempts=job.attempts, progress__lte=fraction).update(
        progress=fraction, progress_message=message[:200]
    )


def cancel_requested_among(job_ids: list[Any]) -> list[Any]:
    """Which of these jobs a user asked to cancel (one query for a worker's whole batch)."""
    if not job_ids:
        return []
    return [pk for (pk,) in rows.values(Job, ["id"], id__in=job_ids, cancel_requested=True)]


def _finalize(job: Job, *, expect: dict[str, Any], **fields: Any) -> bool:
    """The one way into a terminal state: a fenced update (`expect`), then `end` event, signal and webhook."""
    updated = rows.update(Job, {"finished_at": timezone.now(), "lease_expires_at": None, **fields}, pk=job.pk, **expect)
    if updated:
        rows.refresh(job)
        transaction.on_commit(lambda: notify_finished(job.pk, job))
    return bool(updated)


def _terminal_update(job: Job, **fields: Any) -> bool:
    """Finish the attempt `job` holds; a stale attempt (the job was re-queued and claimed again) writes nothing."""
    return _finalize(job, expect={"state": JobState.RUNNING, "attempts": job.attempts}, **fields)


def finish_job(job: Job, result: GenerationResult) -> Job:
    """Store the artifacts and the result together: either all of it lands or the job fails."""
    payload = {
        "text": storable(result.text),
        "data": storable(result.data),
        "metadata": storable(result.metadata),
        "artifacts": [],
    }
    if not result.files:  # one fenced update is the whole write (most text jobs): no files to clean up
        if not _succeed(job, result, payload):
            raise Conflict(f"job {job.pk} is no longer running", code="job_not_running")
        return job
    if not Job.objects.filter(pk=job.pk, state=JobState.RUNNING, attempts=job.attempts).exists():
        # A stale attempt (its lease lapsed and another claimed the job): refuse before any file is written.
        raise Conflict(f"job {job.pk} is no longer running", code="job_not_running")
    stored: list[Artifact] = []
    try:
        with transaction.atomic():
            for index, out in enumerate(result.files):
                artifact = Artifact(
                    job=job,
                    index=index,
                    filename=out.filename,
                    content_type=out.content_type,
                    size=len(out.data),
                    sha256=hashlib.sha256(out.data).hexdigest(),
                    metadata=storable(out.metadata),
                )
                artifact.file.save(out.filename, ContentFile(out.data), save=False)
                stored.append(artifact)
                artifact.save()
            payload["artifacts"] = [str(a.id) for a in stored]
            if not _succeed(job, result, payload):
                raise Conflict(f"job {job.pk} is no longer running", code="job_not_running")
    except Exception:
        for artifact in stored:
            artifact.file.storage.delete(artifact.file.name)
        raise
    return job


def _succeed(job: Job, result: GenerationResult, payload: dict[str, Any]) -> bool:
    return _terminal_update(
        job,
        state=JobState.SUCCEEDED,
        progress=1.0,
        progress_message="done",
        result=payload,
        usage=_measure(job, result),
    )


def _measure(job: Job, result: GenerationResult) -> dict[str, Any]:
    run_seconds = (timezone.now() - job.started_at).total_seconds() if job.started_at else 0.0
    try:
        from aigc_saas.usage.metering import measure_usage
    except ImportError:
        return {"run_seconds": round(run_seconds, 3)}
    return measure_usage(job, result, run_seconds)


def fail_job(job: Job, code: str, message: str) -> Job:
    _terminal_update(job, state=JobState.FAILED, error_code=code, error_message=message[:4000])
    return job


def retry_job(job: Job, code: str, message: str) -> Job:
    """A run cut short on the worker's side (its engine process died, its engine stopped), not by the job: back to
    its queue for another attempt, as a lost worker's job is, while it has attempts left (AIGC_MAX_ATTEMPTS), else
    failed with `code`. Only the attempt that holds the job puts it back; a cancelled one is not retried."""
    if job.attempts < settings.AIGC_MAX_ATTEMPTS and _back_to_queue(job, cancel_requested=False):
        _ring(job.pk, job.queue)
        return job
    return fail_job(job, code, f"{message} (attempt {job.attempts} of at most {settings.AIGC_MAX_ATTEMPTS})")


def _back_to_queue(job: Job, **also: Any) -> bool:
    """Running -> queued, fenced by the attempt (an attempt taken over since writes nothing)."""
    fenced = Job.objects.filter(pk=job.pk, state=JobState.RUNNING, attempts=job.attempts, **also)
    return bool(fenced.update(state=JobState.QUEUED, worker="", lease_expires_at=None, dispatched_at=None))


def mark_cancelled(job: Job, message: str = "cancelled while running") -> Job:
    _terminal_update(job, state=JobState.CANCELLED, error_code="cancelled", error_message=message)
    return job


def cancel_job(job: Job) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop at its next step."""
    if not _finalize(
        job,
        expect={"state": JobState.QUEUED},
        state=JobState.CANCELLED,
        cancel_requested=True,
        error_code="cancelled",
        error_message="cancelled before it started",
    ):
        if not Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(cancel_requested=True):
            job.refresh_from_db()
            raise Conflict(f"job {job.pk} has already {job.state} and cannot be cancelled", code="job_not_cancellable")
        transaction.on_commit(lambda: events.request_cancel(job.pk))
    job.refresh_from_db()
    return job


def requeue_stale_jobs() -> dict[str, int]:
    """The database is the truth: recover jobs whose lease lapsed, re-ring doorbells the broker may have lost
    (with backoff), and fail queued jobs that no live worker consumes."""
    now = timezone.now()
    lapsed = Job.objects.filter(state=JobState.RUNNING, lease_expires_at__lt=now)
    failed = revived = 0
    ringing = True  # after one failed ring (the broker is down or hung) the rest wait for the next sweep
    for job in lapsed[:500]:
        if job.attempts >= settings.AIGC_MAX_ATTEMPTS:
            failed += _terminal_update(
                job,
                state=JobState.FAILED,
                error_code="worker_lost",
                error_message=f"the worker running this job stopped answering, {job.attempts} attempts in all",
            )
        elif _back_to_queue(job):
            revived += 1
            ringing = ringing and _ring(job.pk, job.queue)
    live = capacity.live_queues()
    orphaned = 0
    too_old = now - timedelta(seconds=settings.AIGC_NO_WORKER_FAIL_SECONDS)
    for job in Job.objects.filter(state=JobState.QUEUED, created_at__lt=too_old).exclude(queue__in=live)[:500]:
        orphaned += _finalize(
            job,
            expect={"state": JobState.QUEUED},
            state=JobState.FAILED,
            error_code="no_worker_for_queue",
            error_message=f"no live worker consumed queue {job.queue!r} for {settings.AIGC_NO_WORKER_FAIL_SECONDS} s",
        )
    redispatched = 0
    base = settings.AIGC_QUEUED_REDISPATCH_SECONDS
    for job in Job.objects.filter(state=JobState.QUEUED, queue__in=live).only(
        "pk", "queue", "created_at", "dispatched_at", "dispatch_count"
    )[:500]:
        # Back off: a backlog that waits for free workers is not re-sent every sweep.
        wait = timedelta(seconds=min(base * 2 ** max(job.dispatch_count - 1, 0), 3600))
        if ringing and (job.dispatched_at or job.created_at) < now - wait:
            ringing = _ring(job.pk, job.queue)
            redispatched += ringing
    return {"redispatched": redispatched, "revived": revived, "failed": failed, "orphaned": orphaned}


def _ring(job_id: Any, queue: str) -> bool:
    """Ring the broker for a queued job now (after commit inside a transaction); False when it could not."""
    if connection.in_atomic_block:
        transaction.on_commit(lambda: job_queued.send(sender=Job, job_id=job_id, queue=queue))
        return True
    return all(rang is not False for _, rang in job_queued.send(sender=Job, job_id=job_id, queue=queue))


def _after_commit_publish(job_id: Any, event: str, data: dict[str, Any]) -> None:
    transaction.on_commit(lambda: events.publish(job_id, event, data))


def notify_finished(job_id: Any, job: Job | None = None) -> None:
    """Tell listeners: the `end` event, then the `job_finished` signal (scenario runs, metrics, and the signed
    webhook's outbox row, which webhooks.tasks writes; lost sends are re-sent by its sweep). `job`: the row as
    the committed terminal update left it, when the caller has it (saves reading it again)."""
    if job is None or job.state not in TERMINAL_STATES:
        job = Job.objects.filter(pk=job_id, state__in=TERMINAL_STATES).first()
    if job is None:
        return
    events.publish(job_id, "end", {"state": job.state})
    for receiver, error in job_finished.send_robust(sender=Job, job=job):
        if isinstance(error, Exception):
            log.error("job_finished receiver %r failed for job %s: %s", receiver, job_id, error, exc_info=error)
