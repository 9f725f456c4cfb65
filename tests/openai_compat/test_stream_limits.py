"""Long-lived streams of both APIs (`/api/v1/jobs/{id}/events`, streamed `/v1` completions) share one per-tenant cap,
and revoking a key ends them. Their jobs sit on a queue no worker consumes, so every stream stays open (quiet but
for keep-alives) for as long as a test needs it: nothing races a fast model."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import requests

from aigc_saas.accounts.services import KEY_ACTIVE_CACHE_SECONDS, revoke_api_key
from aigc_saas.jobs.models import Job
from aigc_saas.plugins.models import PluginRecord
from tests.fixtures.stack import Web

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = "transformers-text"
MAX_STREAMS = 2
CHECK_SECONDS = 1  # AIGC_STREAM_KEY_CHECK_SECONDS of this module's server (the default is 5)
CHAT = {"model": TEXT, "messages": [{"role": "user", "content": "x"}], "max_tokens": 8, "stream": True}


@pytest.fixture(scope="module")
def capped(django_db_setup, django_db_blocker, tiny_models, tmp_path_factory) -> Iterator[Web]:  # noqa: ANN001
    """The real ASGI web server (streams only stream there) with a cap of 2 and a key re-check every second."""
    with django_db_blocker.unblock():
        server = Web(
            tmp_path_factory.mktemp("capped") / "web.log",
            AIGC_MAX_STREAMS_PER_TENANT=str(MAX_STREAMS),
            AIGC_STREAM_KEY_CHECK_SECONDS=str(CHECK_SECONDS),
        )
    yield server
    server.stop()


@pytest.fixture
def unserved(db) -> None:  # noqa: ANN001
    """Text jobs go to a queue no worker consumes: the session's real worker (if started) never ends them."""
    assert PluginRecord.objects.filter(name=TEXT).update(queue="stream-limits-unserved") == 1


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def open_events(server: Web, key: str, job_id: str) -> requests.Response:
    return requests.get(f"{server.url}/api/v1/jobs/{job_id}/events", headers=bearer(key), stream=True, timeout=30)


def open_chat(server: Web, key: str) -> requests.Response:
    return requests.post(f"{server.url}/v1/chat/completions", headers=bearer(key), json=CHAT, stream=True, timeout=30)


def submit(server: Web, key: str) -> str:
    response = requests.post(
        f"{server.url}/api/v1/jobs",
        headers=bearer(key),
        json={"generator": TEXT, "params": {"prompt": "x"}},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_for_state(job_id: str, state: str, timeout: float = 15) -> Job:
    deadline = time.monotonic() + timeout
    job = Job.objects.get(pk=job_id)
    while job.state != state and time.monotonic() < deadline:
        time.sleep(0.1)
        job.refresh_from_db()
    return job


def test_event_streams_and_v1_streams_count_against_one_cap_and_a_closed_one_frees_its_slot(
    capped, unserved, tenant_key, other_tenant_key
) -> None:  # noqa: ANN001
    key = tenant_key[1]
    job_id = submit(capped, key)
    events, chat = open_events(capped, key, job_id), open_chat(capped, key)
    assert (events.status_code, chat.status_code) == (200, 200), (events.text, chat.text)

    refused_events = open_events(capped, key, job_id)
    refused_chat = open_chat(capped, key)

    assert refused_events.status_code == 429 and refused_events.json()["error"]["code"] == "too_many_streams"
    assert refused_chat.status_code == 429 and refused_chat.headers["Retry-After"]
    error = refused_chat.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("rate_limit_error", "too_many_streams", "stream")
    assert f"already has {MAX_STREAMS} open streams" in error["message"]
    assert "AIGC_MAX_STREAMS_PER_TENANT" in error["message"]
    assert Job.objects.filter(origin__openai="chat.completions").count() == 1  # a refused call submits nothing
    other = open_chat(capped, other_tenant_key[1])
    assert other.status_code == 200, other.text  # another tenant's slots are its own
    other.close()

    chat.close()  # the server gives the slot back once it sees the disconnect
    deadline = time.monotonic() + 15
    while (reopened := open_events(capped, key, job_id)).status_code == 429:
        reopened.close()
        assert time.monotonic() < deadline, "a closed /v1 stream's slot was never given back"
        time.sleep(0.2)
    assert reopened.status_code == 200
    events.close()
    deadline = time.monotonic() + 15
    while (again := open_chat(capped, key)).status_code == 429:
        again.close()
        assert time.monotonic() < deadline, "a closed event stream's slot was never given back"
        time.sleep(0.2)
    assert again.status_code == 200
    for response in (reopened, again):
        response.close()


def _data_lines(response: requests.Response, revoke: Callable[[], object]) -> tuple[list[str], float]:
    """The stream's `data:` lines; once the first arrived (the stream is open), `revoke()`; seconds from then to
    the stream's end."""
    lines: list[str] = []
    revoked_at = None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            lines.append(line[6:])
            if revoked_at is None:
                revoke()
                revoked_at = time.monotonic()
        elif line.startswith(": keep-alive") and revoked_at is None:
            revoke()  # the jobs stream of a queued job has no data to replay: its keep-alive shows it is open
            revoked_at = time.monotonic()
    assert revoked_at is not None, "the stream ended before it was revoked"
    return lines, time.monotonic() - revoked_at


# A revocation is seen at the next check (every CHECK_SECONDS) once each web process's 2 s cache of the key lapsed.
ENDS_WITHIN = 2 * CHECK_SECONDS + KEY_ACTIVE_CACHE_SECONDS + 3


def test_revoking_the_key_ends_its_open_v1_stream_with_an_error_and_cancels_the_job(
    capped, unserved, tenant_key
) -> None:  # noqa: ANN001
    with open_chat(capped, tenant_key[1]) as response:
        assert response.status_code == 200, response.text
        lines, ended_after = _data_lines(response, lambda: revoke_api_key(tenant_key[0]))

    assert ended_after < ENDS_WITHIN
    assert json.loads(lines[0])["object"] == "chat.completion.chunk"
    error = json.loads(lines[-1])["error"]
    assert error["code"] == "api_key_revoked" and "revoked" in error["message"]
    assert "[DONE]" not in lines  # the answer did not complete
    job_id = uuid.UUID(json.loads(lines[0])["id"].split("-", 1)[1])
    assert wait_for_state(job_id, "cancelled").state == "cancelled"


def test_revoking_the_key_ends_its_open_job_event_stream(capped, unserved, tenant_key) -> None:  # noqa: ANN001
    job_id = submit(capped, tenant_key[1])

    with open_events(capped, tenant_key[1], job_id) as response:
        assert response.status_code == 200, response.text
        lines, ended_after = _data_lines(response, lambda: revoke_api_key(tenant_key[0]))

    assert ended_after < ENDS_WITHIN
    assert json.loads(lines[-1]) == {"code": "api_key_revoked", "message": "the API key of this stream was revoked"}


def test_a_stream_whose_job_outlasts_the_wait_ends_with_a_timeout_error_and_cancels_the_job(
    web, unserved, tenant_key
) -> None:  # noqa: ANN001
    impatient = Web(web.log_path.with_name("impatient.log"), AIGC_OPENAI_WAIT_SECONDS="2")
    try:
        with open_chat(impatient, tenant_key[1]) as response:
            assert response.status_code == 200, response.text
            lines = [line[6:] for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    finally:
        impatient.stop()

    error = json.loads(lines[-1])["error"]
    assert (error["type"], error["code"]) == ("timeout_error", "timeout") and "2s" in error["message"]
    assert "[DONE]" not in lines
    job_id = uuid.UUID(json.loads(lines[0])["id"].split("-", 1)[1])
    assert wait_for_state(job_id, "cancelled").state == "cancelled"  # as a non-streaming call's job would be


def test_a_v1_stream_whose_job_restarts_ends_with_an_error_and_the_job_goes_on(capped, unserved, tenant_key) -> None:  # noqa: ANN001
    """A worker lost mid-stream: the job starts over on another, and chunks cannot be taken back."""
    from datetime import timedelta

    from django.utils import timezone

    from aigc_saas.jobs import events, services

    with open_chat(capped, tenant_key[1]) as response:
        assert response.status_code == 200, response.text
        lines = response.iter_lines(decode_unicode=True)
        first = next(line for line in lines if line.startswith("data: "))
        job_id = uuid.UUID(json.loads(first[6:])["id"].split("-", 1)[1])
        services.claim_job(job_id, "lost-worker")
        events.publish(job_id, "token", {"index": 0, "text": "Half a sen"})
        Job.objects.filter(pk=job_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert services.claim_job(job_id, "next-worker").attempts == 2
        rest = [line[6:] for line in lines if line.startswith("data: ")]

    texts = [c["delta"].get("content") for line in rest[:-1] for c in json.loads(line)["choices"]]
    assert texts == ["Half a sen"]
    error = json.loads(rest[-1])["error"]
    assert error["code"] == "job_restarted" and "restarted" in error["message"]
    assert "[DONE]" not in rest
    assert Job.objects.get(pk=job_id).state == "running"  # not cancelled: the new attempt goes on
