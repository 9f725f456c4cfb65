"""Real HTTP → real Redis → a real Celery worker → the real transformers code path → result over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from aigc_saas.plugins.services import plugin_class
from hardware import select_device

pytestmark = pytest.mark.django_db(transaction=True)


def test_text_job_runs_through_a_worker_and_its_result_comes_back_over_http(api, worker) -> None:  # noqa: ANN001
    job = api.submit("transformers-text", {"prompt": "Write a slogan for a bakery", "max_new_tokens": 12, "seed": 7})
    assert job["state"] == "queued"

    done = api.wait(job)

    assert done["state"] == "succeeded", done
    assert done["progress"]["fraction"] == 1.0
    assert isinstance(done["result"]["text"], str)
    assert done["result"]["metadata"]["completion_tokens"] == 12
    # The worker runs on this machine: the device is the hardware module's choice (CUDA on a GPU machine).
    assert done["result"]["metadata"]["device"] == select_device(plugin_class("transformers-text").needs).device
    assert done["attempts"] == 1
    assert done["model_id"].endswith("tiny-llama")


def test_same_seed_gives_the_same_text(api, worker) -> None:  # noqa: ANN001
    params = {"prompt": "Describe a ceramic mug", "max_new_tokens": 8, "seed": 42, "temperature": 1.0}
    first = api.wait(api.submit("transformers-text", params))
    second = api.wait(api.submit("transformers-text", params))
    assert first["result"]["text"] == second["result"]["text"]


def test_a_submission_that_waits_answers_on_the_wsgi_server_too(api, worker) -> None:  # noqa: ANN001
    """`POST /jobs` is an async view with a sync twin: under WSGI (no event loop of ours) it still answers."""
    response = api.post(
        "jobs?wait=60", {"generator": "transformers-text", "params": {"prompt": "wsgi", "max_new_tokens": 3}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "succeeded"
    assert response.json()["result"]["metadata"]["completion_tokens"] == 3


def test_a_second_delivery_of_the_same_message_runs_nothing(api, worker) -> None:  # noqa: ANN001
    from aigc_saas.jobs.tasks import run_job

    job = api.wait(api.submit("transformers-text", {"prompt": "once", "max_new_tokens": 4}))
    run_job.apply_async(args=[job["id"]], queue="cpu")
    marker = api.wait(api.submit("transformers-text", {"prompt": "after", "max_new_tokens": 4}))  # FIFO: ran after

    again = api.get(job["url"]).json()
    assert marker["state"] == "succeeded"
    assert again["attempts"] == 1
    assert again["finished_at"] == job["finished_at"]


def test_a_running_job_stops_when_cancelled(web_api, worker) -> None:  # noqa: ANN001
    """Through the ASGI web server (the live server's WSGI buffers a stream until it ends)."""
    api = web_api
    job = api.submit("transformers-text", {"prompt": "go on and on", "max_new_tokens": 2048})
    streamed, cancel = "", None
    with api.session.get(f"{job['url']}/events", stream=True, timeout=60) as response:
        event = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "token":
                streamed += json.loads(line[6:])["text"]
                if cancel is None:  # it is decoding: cancel it (its events are read on until the end)
                    cancel = api.post(f"{job['url']}/cancel")
            elif event == "end":
                break

    assert cancel is not None and cancel.status_code == 200, cancel.text
    done = api.wait(job)
    assert done["state"] == "cancelled"
    assert done["error"]["code"] == "cancelled"
    assert done["progress"]["fraction"] < 1 and len(streamed) > 0


def test_server_sent_events_stream_progress_then_the_final_job(api, worker) -> None:  # noqa: ANN001
    job = api.submit("transformers-text", {"prompt": "stream me", "max_new_tokens": 64})
    events = []
    with api.session.get(
        f"{job['url']}/events", stream=True, timeout=60, headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, json.loads(line.removeprefix("data: "))))
                if event == "end":
                    break
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and events[-1][1]["state"] == "succeeded", events[-1][1]["error"]
    fractions = [data["fraction"] for kind, data in events if kind == "progress"]
    assert fractions == sorted(fractions)


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[Any, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append((self.headers, body))  # case-insensitive lookups
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_a_finished_job_is_posted_to_its_webhook_with_a_valid_signature(api, worker, tenant) -> None:  # noqa: ANN001
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        job = api.wait(api.submit("transformers-text", {"prompt": "notify me", "max_new_tokens": 4}, webhook_url=hook))
        deadline = time.monotonic() + 30
        while not _Receiver.received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.shutdown()

    headers, body = _Receiver.received[-1]
    timestamp, digest = (part.split("=", 1)[1] for part in headers["X-AIGC-Signature"].split(","))
    expected = hmac.new(tenant.webhook_secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(digest, expected)
    payload = json.loads(body)
    assert payload["type"] == "job.succeeded"
    assert payload["job"]["id"] == job["id"]
