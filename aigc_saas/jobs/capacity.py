"""Who can take work, and how much a tenant may submit: worker reports, engine capacity, live queues, quotas.

Checks and reports only; every change of a job's state is in services.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from aigc_saas import rows
from aigc_saas.accounts.models import Tenant
from aigc_saas.errors import InvalidInput, QuotaExceeded
from aigc_saas.jobs.models import Job, JobState, WorkerStatus


def check_fits_engines(generator: str, model_id: str, params: dict[str, Any]) -> None:
    """Refuse a text job that no live worker's engine could ever hold (its KV budget, reported by the worker).

    The web has no tokenizer: a prompt counts as at least one token per 16 characters, a lower bound for any
    tokenizer in use, so nothing that might fit is refused here; the worker checks the exact count.
    """
    if "max_new_tokens" not in params:
        return
    text = json.dumps([params.get("prompt"), params.get("messages"), params.get("system")])
    needs = int(params["max_new_tokens"]) + len(text) // 16
    fresh = timezone.now() - timedelta(seconds=settings.AIGC_WORKER_STALE_SECONDS)
    budgets = [
        min(engine["kv_budget_tokens"], engine.get("kv_row_tokens") or engine["kv_budget_tokens"])
        for (engines,) in rows.values(WorkerStatus, ["engines"], updated_at__gte=fresh)
        for engine in engines
        if engine.get("generator") == generator
        and engine.get("model_id") == model_id
        and engine.get("kv_budget_tokens")
    ]
    if budgets and needs > max(budgets):
        raise InvalidInput(
            f"`params.max_new_tokens`: this job needs at least {needs} KV-cache token slots, more than any worker's "
            f"engine holds ({max(budgets)}); shorten the prompt or lower `max_new_tokens`",
            code="context_exceeds_kv_budget",
        )


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


def live_queues() -> set[str]:
    """Queues some worker that reported recently consumes."""
    fresh = timezone.now() - timedelta(seconds=settings.AIGC_WORKER_STALE_SECONDS)
    return {q for (queues,) in rows.values(WorkerStatus, ["queues"], updated_at__gte=fresh) for q in queues}


def record_worker_status(
    name: str,
    *,
    devices: list[dict[str, Any]],
    cache: dict[str, Any],
    queues: list[str],
    engines: list[dict[str, Any]] | None = None,
) -> None:
    status, _ = WorkerStatus.objects.get_or_create(name=name)
    queues = sorted({*status.queues, *queues})
    WorkerStatus.objects.filter(pk=status.pk).update(
        queues=queues, devices=devices, cache=cache, engines=engines or [], updated_at=timezone.now()
    )
