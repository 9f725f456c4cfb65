"""Real processes for the operator tests: a web server subprocess (the deployment's own command, several
processes) and a Celery worker on its own queue with its metrics exporter on a free port, both logging JSON."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from aigc_saas import stack
from aigc_saas.plugins.models import PluginRecord
from tests.fixtures.stack import Worker, worker_env

QUEUE = "ops"  # the ops worker's own queue: jobs pinned to it never reach a worker started elsewhere


class WebServer:
    """`stack.web_command` (what `make run` and compose run) on a free port, on the test database."""

    def __init__(self, log_path: Path, **env: str) -> None:
        self.port = stack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.process = stack.spawn(
            stack.web_command(self.port),
            worker_env(**env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
        )
        deadline = time.monotonic() + 180  # a loaded CI machine imports Django and torch slowly
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"web server exited early:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"web server did not answer /healthz in 180 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stack.stop(self.process)
        self._log.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus endpoint: {(name, sorted labels): value}."""
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@pytest.fixture(scope="module")
def ops_worker(django_db_setup, django_db_blocker, tiny_models, tmp_path_factory) -> Iterator[Worker]:  # noqa: ANN001
    """A worker with JSON logs, its exporter on a free port, and no progress-bar switch in its environment."""
    port = stack.free_port()
    with django_db_blocker.unblock(), mock.patch.dict(os.environ):
        for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
            os.environ.pop(name, None)  # the platform itself must keep bars out of the log
        started = Worker(
            tmp_path_factory.mktemp("ops-worker") / "worker.log",
            queues=f"control,{QUEUE}",
            AIGC_METRICS_PORT=str(port),
            AIGC_LOG_FORMAT="json",
        )
    started.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    yield started
    started.stop()


@pytest.fixture(scope="module")
def ops_web(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[WebServer]:  # noqa: ANN001
    with django_db_blocker.unblock():
        server = WebServer(tmp_path_factory.mktemp("ops-web") / "web.log", AIGC_LOG_FORMAT="json")
    yield server
    server.stop()


@pytest.fixture
def pinned_to_ops_queue(transactional_db) -> Iterator[None]:  # noqa: ANN001
    """Every plugin's jobs go to the ops worker's queue."""
    PluginRecord.objects.update(queue=QUEUE)
    yield
    PluginRecord.objects.update(queue="")


def wait_for(check: Any, timeout: float = 30, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(message or f"not true within {timeout} s")
