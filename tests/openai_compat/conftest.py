"""The official `openai` client against a real ASGI web server and a real worker, on the tiny models."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from aigc_saas import stack
from aigc_saas.plugins.models import PluginRecord
from tests.fixtures.stack import worker_env


class WebServer:
    """`stack.web_command` (gunicorn + uvicorn workers: ASGI, so async views and streams are real)."""

    def __init__(self, log_path: Path) -> None:
        self.port = stack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.process = stack.spawn(
            stack.web_command(self.port),
            worker_env(AIGC_WEB_WORKERS="1"),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
        )
        deadline = time.monotonic() + 60
        while not stack.port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"web server did not start:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        stack.stop(self.process)
        self._log.close()


@pytest.fixture(scope="session")
def v1_server(django_db_setup, django_db_blocker, tiny_models, tmp_path_factory) -> Iterator[WebServer]:  # noqa: ANN001
    with django_db_blocker.unblock():
        started = WebServer(tmp_path_factory.mktemp("v1") / "web.log")
    yield started
    started.stop()


@pytest.fixture
def media(tiny_models, db) -> None:  # noqa: ANN001
    """The image and speech plugins on the tiny models, small and quick by default, as an admin would set them."""
    PluginRecord.objects.filter(name="diffusers-image").update(
        model_id=str(tiny_models["diffusers-image"]), default_params={"steps": 2}
    )
    PluginRecord.objects.filter(name="transformers-speech").update(model_id=str(tiny_models["transformers-speech"]))


@pytest.fixture
def catalogue(db) -> None:  # noqa: ANN001
    from scenarios.core.catalogue import load_catalogue

    load_catalogue()


@pytest.fixture
def client(v1_server, worker, tenant_key):  # noqa: ANN001, ANN201
    from openai import OpenAI

    return OpenAI(base_url=f"{v1_server.url}/v1", api_key=tenant_key[1], max_retries=0, timeout=120)
