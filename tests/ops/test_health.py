"""Probes: /healthz answers whatever the Host; /readyz checks the database, the broker and a live worker for
every queue enabled plugins use, naming what is missing (JSON, 200 or 503)."""

from __future__ import annotations

import socket

import pytest
from django.core.management import CommandError, call_command

from aigc_saas import stack
from aigc_saas.plugins.models import PluginRecord
from tests.ops.conftest import QUEUE

pytestmark = pytest.mark.django_db(transaction=True)


def test_healthz_answers_any_host_without_touching_dependencies(client, settings) -> None:  # noqa: ANN001
    settings.ALLOWED_HOSTS = ["aigc.example.com"]  # a probe comes by IP: host validation must not refuse it
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{stack.free_port()}/0"  # nothing listens there

    response = client.get("/healthz", HTTP_HOST="10.1.2.3")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ready_when_a_live_worker_consumes_every_needed_queue(client, ops_worker) -> None:  # noqa: ANN001
    PluginRecord.objects.update(queue=QUEUE)  # every enabled plugin's jobs go to the ops worker's queue

    response = client.get("/readyz", HTTP_HOST="10.1.2.3")

    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert body["checks"]["workers"]["required_queues"] == ["control", QUEUE]
    node = f"{ops_worker.name}@{socket.gethostname()}"
    assert sorted(body["checks"]["workers"]["live"][node]) == ["control", QUEUE]


def test_readyz_names_the_queue_no_live_worker_consumes(client) -> None:  # noqa: ANN001
    PluginRecord.objects.filter(name="transformers-text").update(queue="nobody-consumes-this")

    response = client.get("/readyz")

    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert "nobody-consumes-this" in body["checks"]["workers"]["missing_queues"]
    assert "nobody-consumes-this" in body["checks"]["workers"]["error"]


def test_a_disabled_plugin_needs_no_worker(client) -> None:  # noqa: ANN001
    PluginRecord.objects.filter(name="transformers-text").update(queue="nobody-consumes-this", enabled=False)

    body = client.get("/readyz").json()

    assert "nobody-consumes-this" not in body["checks"]["workers"]["required_queues"]


def test_readyz_reports_a_broker_that_does_not_answer(client, settings) -> None:  # noqa: ANN001
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{stack.free_port()}/0"

    response = client.get("/readyz")

    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False and "ConnectionError" in body["checks"]["broker"]["error"]
    assert body["checks"]["workers"]["ok"] is False


def test_the_worker_healthcheck_command_pings_the_named_worker(ops_worker, capsys) -> None:  # noqa: ANN001
    call_command("worker_health", name=ops_worker.name)
    assert '"answered": true' in capsys.readouterr().out

    with pytest.raises(CommandError, match="did not answer"):
        call_command("worker_health", name="no-such-worker", timeout=1)
