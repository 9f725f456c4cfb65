"""Fair claiming through a real worker: one tenant's backlog cannot starve another tenant's job."""

from __future__ import annotations

import contextlib
import time

import pytest

from aigc_saas.errors import Conflict
from aigc_saas.jobs import services
from aigc_saas.jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_job_of_another_tenant_starts_before_the_backlog_queued_ahead_of_it(tenant, other_tenant, worker) -> None:  # noqa: ANN001
    for each in (tenant, other_tenant):
        each.max_active_jobs = each.max_jobs_per_day = None
        each.save()
    params = {"prompt": "backlog", "max_new_tokens": 48, "temperature": 0}
    backlog = [services.submit_job(tenant, "transformers-text", params) for _ in range(200)]
    while not Job.objects.filter(pk__in=[j.pk for j in backlog], state="succeeded").exists():
        time.sleep(0.05)  # the worker is busy with the backlog
    late = services.submit_job(other_tenant, "transformers-text", {**params, "prompt": "late"})
    deadline = time.monotonic() + 120
    while (late := Job.objects.get(pk=late.pk)).state in ("queued", "running"):
        assert time.monotonic() < deadline, "the other tenant's job never ran"
        time.sleep(0.05)

    # The jobs of one claim share its `started_at`: how many claims took backlog jobs while the late job waited.
    claims_while_waiting = (
        Job.objects.filter(tenant=tenant, started_at__gt=late.created_at, started_at__lt=late.started_at)
        .values("started_at")
        .distinct()
        .count()
    )
    durations = [
        (j.finished_at - j.started_at).total_seconds()
        for j in Job.objects.filter(tenant=tenant, state="succeeded", started_at__lt=late.created_at)
    ]
    waited = (late.started_at - late.created_at).total_seconds()
    print(f"late job waited {waited:.2f} s; one backlog job ran {min(durations):.2f}..{max(durations):.2f} s")
    assert late.state == "succeeded"
    # A claim that had already read the queue when the late job was committed may still take backlog jobs (as many
    # as its engines had rows for); with a pool of task threads two such claims were seen in flight on a loaded
    # 2-core machine (CI, fresh clone). Counting jobs instead of claims failed once with one claim of 3.
    assert claims_while_waiting <= 2, f"{claims_while_waiting} claims took backlog jobs before it"
    assert waited <= max(durations)
    for job in Job.objects.filter(tenant=tenant, state__in=("queued", "running")):
        with contextlib.suppress(Conflict):  # it may have finished meanwhile
            services.cancel_job(job)  # leave the worker idle for the next test
