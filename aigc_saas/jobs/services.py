"""Every state change of a Job happens here: submit, dispatch, claim, progress, finish, fail, cancel, requeue."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from aigc_saas.accounts.models import ApiKey, Tenant
from aigc_saas.assets.inputs import validate_asset_params
from aigc_saas.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from aigc_saas.jobs.models import TERMINAL_STATES, Artifact, Job, JobState, WorkerStatus
from aigc_saas.jobs.signals import job_finished
from aigc_saas.jobs.webhooks import check_webhook_url
from aigc_saas.plugins.services import effective_config, enabled_plugin, queue_for
from aigc_saas.validation import NUL_MESSAGE, nul_character_paths
from generators.base import GenerationResult
from generators.errors import ParamsInvalid

log = logging.getLogger(__name__)


def _storable(value: Any) -> Any:
    """Model output with NUL characters replaced by U+FFFD: the database must be able to store every result."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value


def _validated_params(cls: Any, defaults: dict[str, Any], params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidInput(
            "`params` must be a JSON object",
            fields=[{"field": "params", "code": "type", "message": "`params` must be a JSON object"}],
        )
    if bad := nul_character_paths(params, "params"):
        fields = [{"field": path, "code": "null_character", "message": f"`{path}`: {NUL_MESSAGE}"} for path in bad]
        raise InvalidInput(fields[0]["message"], fields=fields)
    try:
        model = cls.validate_params({**defaults, **params})
    except ParamsInvalid as exc:
        fields = [{**e, "field": f"params.{e['field']}", "message": f"`params.{e['message'][1:]}"} for e in exc.errors]
        raise InvalidInput("; ".join(f["message"] for f in fields), fields=fields) from None
    return model.model_dump(mode="json")


def submit_job(
    tenant: Tenant,
    generator: str,
    params: Any,
    *,
    model: str | None = None,
    api_key: ApiKey | None = None,
    origin: dict[str, Any] | None = None,
    webhook_url: str = "",
) -> Job:
    """Validate against the plugin's models, record the job as queued, and ring the broker after commit."""
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
    clean = _validated_params(info.cls, record.default_params or {}, params)
    validate_asset_params(tenant, info.cls, clean)  # asset ids: this tenant's, of accepted types (issue 12)
    queue = queue_for(record, info)
    webhook_url = check_webhook_url(webhook_url)
    with transaction.atomic():
        enforce_quota(tenant)
        job = Job.objects.create(
            tenant=tenant,
            api_key=api_key,
            generator=generator,
            plugin_version=info.version,
            model_id=model_id,
            params=clean,
            queue=queue,
            origin=origin or {},
            webhook_url=webhook_url,
        )
        transaction.on_commit(lambda: dispatch_job(job.id))
    return job


def usage(tenant: Tenant) -> dict[str, int]:
    """Jobs submitted since UTC midnight, and jobs queued or running now."""
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    jobs = Job.objects.filter(tenant=tenant)
    return {
        "jobs_today": jobs.filter(created_at__gte=midnight).count(),
        "active_jobs": jobs.filter(state__in=[JobState.QUEUED, JobState.RUNNING]).count(),
    }


def enforce_quota(tenant: Tenant) -> None:
    """Refuse a job over the tenant's quotas; the tenant row lock makes concurrent submissions count one by one."""
    if tenant.max_jobs_per_day is None and tenant.max_active_jobs is None:
        return
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    current = usage(tenant)
    if tenant.max_jobs_per_day is not None and current["jobs_today"] >= tenant.max_jobs_per_day:
        raise QuotaExceeded(
            f"`max_jobs_per_day`: this tenant has submitted {current['jobs_today']} of its "
            f"{tenant.max_jobs_per_day} jobs for today (UTC)"
        )
    if tenant.max_active_jobs is not None and current["active_jobs"] >= tenant.max_active_jobs:
        raise QuotaExceeded(
            f"`max_active_jobs`: this tenant already has {current['active_jobs']} jobs queued or running, "
            f"its limit is {tenant.max_active_jobs}; wait for one to finish"
        )


def dispatch_job(job_id: Any) -> None:
    """Ring the doorbell: the worker reads everything else from the row."""
    from aigc_saas.jobs.tasks import run_job

    job = Job.objects.filter(pk=job_id, state=JobState.QUEUED).only("queue").first()
    if job is None:
        return
    try:
        run_job.apply_async(args=[str(job_id)], queue=job.queue)
    except Exception:  # noqa: BLE001 - the sweep re-dispatches jobs the broker never got
        log.exception("could not dispatch job %s; the stale-job sweep will retry", job_id)
        return
    Job.objects.filter(pk=job_id).update(dispatched_at=timezone.now())


def get_job(tenant: Tenant, job_id: Any) -> Job:
    """A job of this tenant; another tenant's id is indistinguishable from a missing one."""
    job = Job.objects.filter(tenant=tenant, pk=job_id).first()
    if job is None:
        raise NotFound(f"`job_id`: no job {job_id} in this tenant")
    return job


def claim_jobs(job_ids: Sequence[Any], worker: str, device: str = "") -> list[Job]:
    """Atomically move queued jobs to running; ids already claimed (a second delivery) are left out."""
    with transaction.atomic():
        claimable = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(pk__in=job_ids, state=JobState.QUEUED)
            .values_list("pk", flat=True)
        )
        if not claimable:
            return []
        now = timezone.now()
        Job.objects.filter(pk__in=claimable, state=JobState.QUEUED).update(
            state=JobState.RUNNING,
            started_at=now,
            attempts=F("attempts") + 1,
            worker=worker,
            device=device,
            progress=0.0,
            progress_message="started",
        )
    return list(Job.objects.filter(pk__in=claimable, state=JobState.RUNNING, worker=worker))


def claim_job(job_id: Any, worker: str, device: str = "") -> Job | None:
    claimed = claim_jobs([job_id], worker, device)
    return claimed[0] if claimed else None


def report_progress(job_id: Any, fraction: float, message: str = "") -> None:
    """Progress only moves forward, and only while the job runs."""
    fraction = max(0.0, min(1.0, float(fraction)))
    Job.objects.filter(pk=job_id, state=JobState.RUNNING, progress__lte=fraction).update(
        progress=fraction, progress_message=message[:200]
    )


def cancel_requested(job_id: Any) -> bool:
    return Job.objects.filter(pk=job_id, cancel_requested=True).exists()


def _terminal_update(job: Job, **fields: Any) -> bool:
    updated = Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(finished_at=timezone.now(), **fields)
    if updated:
        job.refresh_from_db()
        transaction.on_commit(lambda: notify_finished(job.pk))
    return bool(updated)


def finish_job(job: Job, result: GenerationResult) -> Job:
    """Store the artifacts and the result together: either all of it lands or the job fails."""
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
                    metadata=_storable(out.metadata),
                )
                artifact.file.save(out.filename, ContentFile(out.data), save=False)
                stored.append(artifact)
                artifact.save()
            payload = {
                "text": _storable(result.text),
                "data": _storable(result.data),
                "metadata": _storable(result.metadata),
                "artifacts": [str(a.id) for a in stored],
            }
            if not _terminal_update(
                job, state=JobState.SUCCEEDED, progress=1.0, progress_message="done", result=payload
            ):
                raise Conflict(f"job {job.pk} is no longer running", code="job_not_running")
    except Exception:
        for artifact in stored:
            artifact.file.storage.delete(artifact.file.name)
        raise
    return job


def fail_job(job: Job, code: str, message: str) -> Job:
    _terminal_update(job, state=JobState.FAILED, error_code=code, error_message=message[:4000])
    return job


def mark_cancelled(job: Job, message: str = "cancelled while running") -> Job:
    _terminal_update(job, state=JobState.CANCELLED, error_code="cancelled", error_message=message)
    return job


def cancel_job(job: Job) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop at its next step."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
        state=JobState.CANCELLED,
        cancel_requested=True,
        finished_at=now,
        error_code="cancelled",
        error_message="cancelled before it started",
    ):
        transaction.on_commit(lambda: notify_finished(job.pk))
    elif not Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(cancel_requested=True):
        job.refresh_from_db()
        raise Conflict(f"job {job.pk} has already {job.state} and cannot be cancelled", code="job_not_cancellable")
    job.refresh_from_db()
    return job


def requeue_stale_jobs() -> dict[str, int]:
    """The database is the truth: re-dispatch queued jobs the broker lost, recover jobs of dead workers."""
    now = timezone.now()
    lost_after = now - timedelta(seconds=settings.AIGC_QUEUED_REDISPATCH_SECONDS)
    queued = list(
        Job.objects.filter(state=JobState.QUEUED)
        .filter(Q(dispatched_at__isnull=True, created_at__lt=lost_after) | Q(dispatched_at__lt=lost_after))
        .values_list("pk", flat=True)[:500]
    )
    dead_after = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 120)
    stuck = Job.objects.filter(state=JobState.RUNNING, started_at__lt=dead_after)
    failed = stuck.filter(attempts__gte=settings.AIGC_MAX_ATTEMPTS).update(
        state=JobState.FAILED,
        finished_at=now,
        error_code="worker_lost",
        error_message=f"the worker running this job stopped answering {settings.AIGC_MAX_ATTEMPTS} times",
    )
    revived = list(stuck.filter(attempts__lt=settings.AIGC_MAX_ATTEMPTS).values_list("pk", flat=True))
    Job.objects.filter(pk__in=revived, state=JobState.RUNNING).update(state=JobState.QUEUED, worker="")
    for job_id in [*queued, *revived]:
        dispatch_job(job_id)
    return {"redispatched": len(queued), "revived": len(revived), "failed": failed}


def notify_finished(job_id: Any) -> None:
    """Tell listeners (scenario runs) and queue the signed webhook, if the job asked for one."""
    from aigc_saas.webhooks.services import enqueue_webhook

    job = Job.objects.filter(pk=job_id, state__in=TERMINAL_STATES).first()
    if job is None:
        return
    for receiver, error in job_finished.send_robust(sender=Job, job=job):
        if isinstance(error, Exception):
            log.error("job_finished receiver %r failed for job %s: %s", receiver, job_id, error, exc_info=error)
    if job.webhook_url:
        enqueue_webhook(job)  # a pending WebhookDelivery row (the outbox), sent on commit; lost sends are re-sent


def record_worker_status(name: str, *, devices: list[dict[str, Any]], cache: dict[str, Any], queues: list[str]) -> None:
    status, _ = WorkerStatus.objects.get_or_create(name=name)
    queues = sorted({*status.queues, *queues})
    WorkerStatus.objects.filter(pk=status.pk).update(
        queues=queues, devices=devices, cache=cache, updated_at=timezone.now()
    )
