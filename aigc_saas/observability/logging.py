"""Job-aware logs: every line of a job's life carries its job id and tenant; JSON lines on request.

`bind_job(job_id, tenant_id)` sets both in a contextvar for the code inside it (an API view, a worker
running a job, the plugin it calls); `JobContextFilter`, on the handler, copies them onto every record,
whatever logger wrote it. `AIGC_LOG_FORMAT=json` swaps the plain formatter for python-json-logger's.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_job: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("aigc_job", default=None)

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s%(job_context)s: %(message)s"
# Fields of each JSON line (python-json-logger reads the names from this format string).
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


@contextlib.contextmanager
def bind_job(job_id: Any, tenant_id: Any) -> Iterator[None]:
    """Within this block every log record names the job and its tenant (also across `asyncio` tasks it starts)."""
    token = _job.set((str(job_id), str(tenant_id)))
    try:
        yield
    finally:
        _job.reset(token)


def current_job() -> tuple[str, str] | None:
    """(job id, tenant id) bound here, or None."""
    return _job.get()


class JobContextFilter(logging.Filter):
    """Adds `job_id`, `tenant_id` and, for the plain format, `job_context` to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _job.get()
        if bound is not None:
            record.job_id, record.tenant_id = bound
        else:  # outside bind_job a caller may still name the job: log.info(..., extra={"job_id": ..., ...})
            record.job_id = getattr(record, "job_id", None)
            record.tenant_id = getattr(record, "tenant_id", None)
            if record.job_id is None and (job_id := _celery_job_id(record)):
                # Celery's "Task aigc.run_job[…] received", logged by the worker's parent before any job code.
                record.job_id, record.tenant_id = job_id, _tenant_resolver(job_id) if _tenant_resolver else None
        record.job_context = f" [job={record.job_id} tenant={record.tenant_id}]" if record.job_id else ""
        return True


class JobJsonFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, process, message, job_id, tenant_id, any `extra=` fields."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("job_context", None)  # the plain format's helper, not a field
        # Always present (null outside a job), so a query on job_id needs no "field exists" clause.
        log_data["job_id"] = getattr(record, "job_id", None)
        log_data["tenant_id"] = getattr(record, "tenant_id", None)


_JOB_TASKS = {"aigc.run_job"}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_tenant_resolver: Callable[[str], str | None] | None = None


def set_tenant_resolver(resolver: Callable[[str], str | None]) -> None:
    """How to find a job's tenant from its id, for log lines that know only the id (set by the Django app)."""
    global _tenant_resolver
    _tenant_resolver = resolver


def _celery_job_id(record: logging.LogRecord) -> str | None:
    data = getattr(record, "data", None)
    if isinstance(data, dict) and data.get("name") in _JOB_TASKS:
        match = _UUID.search(str(data.get("args", "")))
        return match[0] if match else None
    return None


def json_formatter() -> logging.Formatter:
    return JobJsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level", "name": "logger", "asctime": "time"})


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """The LOGGING dict of settings: plain (default) or JSON lines, job context on both."""
    if fmt not in ("plain", "json"):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"environment variable `AIGC_LOG_FORMAT` must be plain or json, got {fmt!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job": {"()": "aigc_saas.observability.logging.JobContextFilter"}},
        "formatters": {
            "plain": {"format": PLAIN_FORMAT},
            "json": {"()": "aigc_saas.observability.logging.json_formatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": fmt, "filters": ["job"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.server": {"level": "WARNING"}},
    }


def quiet_progress_bars() -> None:
    """No tqdm bars from huggingface_hub, transformers or diffusers: in a Celery worker stderr becomes WARNING
    log lines, one per refresh. The variables are read at import; the calls cover libraries already imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm >= 4.66 reads TQDM_* defaults (diffusers' pipelines use it)
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
