"""Signals apps on top of the core listen to (sent after the state change is committed)."""

from django.dispatch import Signal

# Sent with `job=` once a job reaches succeeded, failed or cancelled.
job_finished = Signal()
