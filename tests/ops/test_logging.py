"""Log lines name the job and tenant they belong to, in plain or JSON format, from any logger (a plugin's too)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.core.exceptions import ImproperlyConfigured

from aigc_saas.observability.logging import PLAIN_FORMAT, JobContextFilter, bind_job, json_formatter, logging_config


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger("aigc_plugin_example.generate")  # as a plugin's module logger would be named
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_a_plugin_line_inside_bind_job_carries_the_job_and_tenant_as_json() -> None:
    logger, stream = capture(json_formatter())

    with bind_job("job-1", "tenant-9"):
        logger.info("step %d of %d", 1, 4, extra={"step": 1})
    logger.info("between jobs")

    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "step 1 of 4" and inside["step"] == 1
    assert (inside["job_id"], inside["tenant_id"]) == ("job-1", "tenant-9")
    assert {"time", "level", "logger", "process"} <= set(inside)
    assert (outside["job_id"], outside["tenant_id"]) == (None, None)  # always present, null outside a job
    assert "job_context" not in inside


def test_the_plain_format_shows_the_job_only_inside_one() -> None:
    logger, stream = capture(logging.Formatter(PLAIN_FORMAT))

    with bind_job("job-1", "tenant-9"):
        logger.warning("slow step")
    logger.warning("idle")

    inside, outside = stream.getvalue().splitlines()
    assert inside.endswith("WARNING aigc_plugin_example.generate [job=job-1 tenant=tenant-9]: slow step")
    assert outside.endswith("WARNING aigc_plugin_example.generate: idle")


def test_bindings_nest_and_unwind() -> None:
    logger, stream = capture(json_formatter())

    with bind_job("outer", "t1"):
        with bind_job("inner", "t2"):
            logger.info("a")
        logger.info("b")

    assert [json.loads(line)["job_id"] for line in stream.getvalue().splitlines()] == ["inner", "outer"]


def test_celery_received_lines_name_the_job_from_the_task_arguments() -> None:
    logger, stream = capture(json_formatter())
    data = {"id": "t", "name": "aigc.run_job", "args": "['0b6f8ac4-2a6c-4bd5-9a4e-d6a7f3b1c9e0']"}

    logger.info("Task %(name)s[%(id)s] received", data, extra={"data": data})

    assert json.loads(stream.getvalue())["job_id"] == "0b6f8ac4-2a6c-4bd5-9a4e-d6a7f3b1c9e0"


def test_settings_choose_the_format_and_refuse_an_unknown_one() -> None:
    config = logging_config("INFO", "json")
    assert config["handlers"]["console"]["formatter"] == "json"
    assert config["handlers"]["console"]["filters"] == ["job"]

    with pytest.raises(ImproperlyConfigured, match="AIGC_LOG_FORMAT"):
        logging_config("INFO", "xml")
