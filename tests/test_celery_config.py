"""The broker is only a doorbell: a job message is acknowledged after the job, redelivered if its worker dies,
never prefetched by a busy worker, and never redelivered to a second worker while a job may still be running."""

from __future__ import annotations

from aigc_saas.celery import app
from aigc_saas.jobs.tasks import run_job


def test_job_messages_are_acknowledged_late_and_rejected_when_the_worker_is_lost() -> None:
    assert run_job.acks_late and run_job.reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1


def test_the_visibility_timeout_outlasts_the_hard_time_limit() -> None:
    soft, hard = app.conf.task_soft_time_limit, app.conf.task_time_limit
    assert soft < hard < app.conf.broker_transport_options["visibility_timeout"]
