"""A child job of a run finished: ring the run's doorbell (the run advances in a task, not in the job's worker)."""

from __future__ import annotations

import logging
from typing import Any

from aigc_saas.jobs.models import Job

log = logging.getLogger(__name__)


def advance_run_of_job(sender: Any, job: Job, **kwargs: Any) -> None:
    run_id = (job.origin or {}).get("run")
    if not run_id:
        return
    from scenarios.core.tasks import advance_run

    try:
        advance_run.apply_async(args=[str(run_id)])
    except Exception:  # noqa: BLE001 - the stale-run sweep advances runs whose doorbell was lost
        log.exception("could not queue the advance of run %s; the sweep will", run_id)
