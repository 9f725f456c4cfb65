"""Celery tasks of the scenario apps: take ids, safe to run twice, a call to a service each."""

from celery import shared_task

from scenarios.core import runs


@shared_task(name="scenarios.advance_run", acks_late=True)
def advance_run(run_id: str) -> str:
    run = runs.advance_run(run_id)
    return run.state if run else "missing"


@shared_task(name="scenarios.advance_stale_runs")
def advance_stale_runs() -> int:
    """The sweep for runs whose doorbell was lost: every running run whose current job has finished (one run's
    failure does not stop the sweep for the others)."""
    return runs.advance_stale_runs()
