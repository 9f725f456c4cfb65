"""What a claim reads: the claimable jobs of a queue, oldest first, as plain rows (`services.claim_fitting` orders
them with `ordering.fair_pick` and claims the pick). Reads only; every state change stays in `services`."""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from aigc_saas import rows
from aigc_saas.jobs.models import Job, JobState
from aigc_saas.jobs.ordering import covered

CLAIM_CANDIDATES = 200  # the oldest claimable jobs a claim reads and orders
COLUMNS = ["id", "tenant_id", "state", "attempts", "created_at", "generator", "steps", "model_id"]


def claimable(now: Any) -> Q:
    """Queued jobs, and running ones whose lease lapsed (their worker died or stalled)."""
    return Q(state=JobState.QUEUED) | Q(state=JobState.RUNNING, lease_expires_at__lt=now)


def read(queue: str, now: Any, room: dict[tuple[str, str], int] | None, default_room: int) -> list[tuple]:
    """The CLAIM_CANDIDATES oldest claimable jobs of `queue` as (pk, tenant_id, state, attempts, created_at,
    generator, steps, model_id). Where they hold as many of an engine's jobs as its `room`, also those of the
    others past it: a full engine's backlog longer than one read would hide the jobs after it of an engine with
    room until it shrank (head-of-line blocking)."""
    found = _oldest(queue, now, CLAIM_CANDIDATES)
    if len(found) >= CLAIM_CANDIDATES and (enough := covered(found, room, default_room)):
        seen = {c[0] for c in found}
        found = sorted(found + [c for c in _past(queue, now, enough) if c[0] not in seen], key=lambda c: c[4])
    return found


def _oldest(queue: str, now: Any, limit: int) -> list[tuple]:
    """`claimable` as two reads whose SQL is written once (aigc_saas.rows), merged by age; the ORM compiled the OR
    anew every claim."""
    queued = rows.values(Job, COLUMNS, order_by=["created_at"], limit=limit, queue=queue, state=JobState.QUEUED)
    lapsed = rows.values(
        Job,
        COLUMNS,
        order_by=["created_at"],
        limit=limit,
        queue=queue,
        state=JobState.RUNNING,
        lease_expires_at__lt=now,
    )
    return sorted(queued + lapsed, key=lambda row: row[4])[:limit] if lapsed else queued


def _past(queue: str, now: Any, engines: list[tuple[str, str]]) -> list[tuple]:
    """The oldest claimable jobs but those of these (generator, model) engines: read only past a full engine's
    long backlog, so the ORM compiles it."""
    past = Q()
    for generator, model_id in engines:
        past |= Q(generator=generator, model_id=model_id)
    found = Job.objects.filter(claimable(now), queue=queue).exclude(past).order_by("created_at")
    return list(found.values_list(*COLUMNS)[:CLAIM_CANDIDATES])
