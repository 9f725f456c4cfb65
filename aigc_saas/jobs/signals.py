"""Signals apps on top of the core listen to (sent after the state change is committed)."""

from django.dispatch import Signal

# Sent with `job=` once a job reaches succeeded, failed or cancelled.
job_finished = Signal()

# Sent with `job_id=` and `queue=` after a job is committed as queued (new, or re-queued by the sweep): the
# worker side rings the broker (jobs.tasks connects it), so services never import the task layer. `counted=True`:
# the row already records this ring (dispatched_at, dispatch_count), and only a refusal must be written back.
# `coalesce=True`: no message when a doorbell of the queue is already on its way (aigc_saas.jobs.doorbell), and
# `job_id=None` with it: a ring for the queue that names no job.
job_queued = Signal()
