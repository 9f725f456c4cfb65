"""The serving engine through the real stack: ASGI web server, Redis, a threaded Celery worker, the tiny Llama.

Jobs join and leave a running batch between steps, seeds reproduce whatever runs beside them, a cancel stops one
job while the others finish, and the SSE stream's tokens are the result's text, replayed to a late client.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.django_db(transaction=True)


def sse(url: str, key: str, timeout: float = 120, events: list | None = None) -> list[tuple[str, Any]]:
    """Every event of a stream, until it ends (appended to `events` as they arrive, when given)."""
    events = [] if events is None else events
    with requests.get(url, headers={"Authorization": f"Bearer {key}"}, stream=True, timeout=timeout) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "end":
                    break
    return events


def text_of(events: list[tuple[str, Any]]) -> str:
    tokens = [data for name, data in events if name == "token"]
    assert [t["index"] for t in tokens] == list(range(len(tokens)))
    return "".join(t["text"] for t in tokens)


def test_token_events_concatenate_to_the_result_and_a_late_client_gets_the_whole_text(
    web_api, tenant_key, worker
) -> None:  # noqa: ANN001
    job = web_api.submit("transformers-text", {"prompt": "Three slogans for a bakery", "max_new_tokens": 40})
    live = sse(f"{job['url']}/events", tenant_key[1])
    assert live[-1][0] == "end" and live[-1][1]["state"] == "succeeded", live[-1][1]["error"]
    final = live[-1][1]["result"]["text"]
    assert text_of(live) == final and final
    assert any(name == "progress" for name, _ in live)

    late = sse(f"{job['url']}/events", tenant_key[1])  # after the job ended
    assert text_of(late) == final


def test_a_client_resumes_after_the_last_event_it_got_and_a_bad_event_id_is_refused(web_api, worker) -> None:  # noqa: ANN001
    job = web_api.submit("transformers-text", {"prompt": "resume me", "max_new_tokens": 30})
    web_api.get(f"{job['url']}?wait=60")

    def frames(**headers: str) -> list[dict[str, str]]:
        out, current = [], {}
        with web_api.session.get(f"{job['url']}/events", stream=True, timeout=30, headers=headers) as response:
            assert response.status_code == 200, response.text
            for line in response.iter_lines(decode_unicode=True):
                if not line:
                    if current:
                        out.append(current)
                    if current.get("event") == "end":
                        return out
                    current = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    current[name] = value
        return out

    everything = frames()
    middle = next(i for i, f in enumerate(everything) if f["event"] == "token")
    resumed = frames(**{"Last-Event-ID": everything[middle]["id"]})
    assert [f["id"] for f in resumed[:-1]] == [f["id"] for f in everything[middle + 1 : -1]]
    assert resumed[-1]["event"] == "end"

    refused = web_api.get(f"{job['url']}/events", headers={"Last-Event-ID": "yesterday"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_last_event_id"
    assert "`Last-Event-ID`" in refused.json()["error"]["message"]


def test_wait_answers_when_the_job_ends_and_refuses_an_unbounded_wait(web_api, worker) -> None:  # noqa: ANN001
    job = web_api.submit("transformers-text", {"prompt": "long poll", "max_new_tokens": 30})
    done = web_api.get(f"{job['url']}?wait=60").json()
    assert done["state"] == "succeeded"
    refused = web_api.get(f"{job['url']}?wait=100000")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_wait"


def test_a_submission_that_waits_answers_with_the_finished_job_in_one_request(web_api, worker) -> None:  # noqa: ANN001
    body = {"generator": "transformers-text", "params": {"prompt": "submit and wait", "max_new_tokens": 12, "seed": 3}}
    response = web_api.post("jobs?wait=60", body)
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["state"] == "succeeded" and done["result"]["metadata"]["completion_tokens"] == 12
    assert isinstance(done["warnings"], list) and response.headers["Location"] == done["url"]
    assert web_api.get(done["url"]).json() == {k: v for k, v in done.items() if k != "warnings"}
    # The same seed submitted without waiting, then long-polled: the same text.
    assert web_api.get(f"{web_api.submit(**body)['url']}?wait=60").json()["result"]["text"] == done["result"]["text"]

    # A job that outlasts the wait: the 202 of a submission, with the job as it is by then.
    long = web_api.post("jobs?wait=0.2", {**body, "params": {"prompt": "go on", "max_new_tokens": 1500}})
    assert long.status_code == 202 and long.json()["state"] in ("queued", "running")
    assert web_api.post(f"{long.json()['url']}/cancel").status_code == 200


def test_a_job_submitted_mid_batch_starts_and_ends_before_that_batch_ends(web_api, worker) -> None:  # noqa: ANN001
    longs = [web_api.submit("transformers-text", {"prompt": f"long {i}", "max_new_tokens": 1500}) for i in range(4)]
    deadline = time.monotonic() + 60
    while any(web_api.get(j["url"]).json()["state"] != "running" for j in longs):
        assert time.monotonic() < deadline, "the long jobs did not start"
        time.sleep(0.1)
    short = web_api.get(
        f"{web_api.submit('transformers-text', {'prompt': 'short', 'max_new_tokens': 4})['url']}?wait=60"
    )
    assert short.json()["state"] == "succeeded"
    assert [web_api.get(j["url"]).json()["state"] for j in longs] == ["running"] * 4
    for j in longs:
        web_api.post(f"{j['url']}/cancel")


def test_a_seeded_job_gives_the_same_text_alone_and_in_a_batch(web_api, worker) -> None:  # noqa: ANN001
    seeded = {"prompt": "A slogan for a tea shop", "max_new_tokens": 24, "seed": 11, "temperature": 0.9}
    alone = web_api.get(f"{web_api.submit('transformers-text', seeded)['url']}?wait=60").json()
    crowd = [
        web_api.submit("transformers-text", {"prompt": f"noise {i} " * i or "x", "max_new_tokens": 40, "top_p": 0.6})
        for i in range(6)
    ]
    batched = web_api.submit("transformers-text", seeded)
    crowd += [web_api.submit("transformers-text", {"prompt": "more noise", "max_new_tokens": 40})]
    again = web_api.get(f"{batched['url']}?wait=60").json()
    assert again["result"]["text"] == alone["result"]["text"]
    assert all(web_api.get(f"{j['url']}?wait=60").json()["state"] == "succeeded" for j in crowd)


def test_a_job_cancelled_inside_a_batch_stops_while_the_others_finish(web_api, tenant_key, worker) -> None:  # noqa: ANN001
    budgets = (300, 2000, 300)
    jobs = [
        web_api.submit("transformers-text", {"prompt": f"batch {i}", "max_new_tokens": n})
        for i, n in enumerate(budgets)
    ]
    seen: list[tuple[str, Any]] = []
    reader = threading.Thread(target=sse, args=(f"{jobs[1]['url']}/events", tenant_key[1]), kwargs={"events": seen})
    reader.start()
    deadline = time.monotonic() + 60
    while sum(1 for name, _ in seen if name == "token") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
        if not reader.is_alive():
            break
    assert web_api.post(f"{jobs[1]['url']}/cancel").status_code == 200
    reader.join(60)
    cancelled = web_api.get(f"{jobs[1]['url']}?wait=30").json()
    assert cancelled["state"] == "cancelled"
    tokens = [data for name, data in seen if name == "token"]
    assert seen[-1][0] == "end" and len(tokens) < 2000
    finished = [web_api.get(f"{jobs[i]['url']}?wait=60").json() for i in (0, 2)]
    assert [f["result"]["metadata"]["completion_tokens"] for f in finished] == [300, 300]


def test_a_tenants_open_streams_are_capped_and_others_keep_being_served(
    web, tenant_key, other_tenant_key, worker
) -> None:  # noqa: ANN001
    from tests.fixtures.stack import Api, Web

    capped = Web(web.log_path.with_name("capped.log"), AIGC_MAX_STREAMS_PER_TENANT="3")
    try:
        mine, theirs = Api(capped.url, tenant_key[1]), Api(capped.url, other_tenant_key[1])
        job = mine.submit("transformers-text", {"prompt": "stream me", "max_new_tokens": 2000})
        headers = {"Authorization": f"Bearer {tenant_key[1]}"}
        streams = [requests.get(f"{job['url']}/events", headers=headers, stream=True, timeout=30) for _ in range(3)]
        assert all(s.status_code == 200 for s in streams)
        refused = requests.get(f"{job['url']}/events", headers=headers, timeout=30)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
        assert theirs.get("account").status_code == 200
        streams.pop().close()  # the server frees the slot once it sees the disconnect
        deadline = time.monotonic() + 15
        while (
            reopened := requests.get(f"{job['url']}/events", headers=headers, stream=True, timeout=30)
        ).status_code == 429:
            reopened.close()
            assert time.monotonic() < deadline, "a closed stream's slot was never given back"
            time.sleep(0.2)
        assert reopened.status_code == 200
        for s in [*streams, reopened]:
            s.close()
        mine.post(f"{job['url']}/cancel")
    finally:
        capped.stop()


def test_the_slot_runner_serves_jobs_through_the_worker(web_api, tenant_key, worker) -> None:  # noqa: ANN001
    """kv_layout="slots" (the CUDA default, eager here): the worker's engine sizes its slots from its KV budget,
    a seeded job gives its lone text among others, a cancelled one stops, and the stream is the result."""
    from aigc_saas.jobs.models import WorkerStatus
    from aigc_saas.plugins.models import PluginRecord

    assert PluginRecord.objects.filter(name="transformers-text").update(config={"kv_layout": "slots"}) == 1
    try:
        seeded = {"prompt": "A slogan for a tea shop", "max_new_tokens": 24, "seed": 5, "temperature": 0.9}
        alone = web_api.get(f"{web_api.submit('transformers-text', seeded)['url']}?wait=60").json()
        assert alone["state"] == "succeeded", alone["error"]
        long = web_api.submit("transformers-text", {"prompt": "cancel me", "max_new_tokens": 2000})
        crowd = [web_api.submit("transformers-text", {"prompt": f"noise {i}", "max_new_tokens": 30}) for i in range(5)]
        batched = web_api.submit("transformers-text", seeded)
        live = sse(f"{batched['url']}/events", tenant_key[1])
        assert live[-1][0] == "end" and live[-1][1]["state"] == "succeeded"
        assert text_of(live) == live[-1][1]["result"]["text"] == alone["result"]["text"]
        assert web_api.post(f"{long['url']}/cancel").status_code == 200
        assert web_api.get(f"{long['url']}?wait=60").json()["state"] == "cancelled"
        assert all(web_api.get(f"{j['url']}?wait=60").json()["state"] == "succeeded" for j in crowd)
        # The engine that ran them holds one slot per job: what the worker reports as one job's most.
        deadline = time.monotonic() + 20
        while True:
            engines = [
                e for s in WorkerStatus.objects.all() for e in s.engines if e.get("generator") == "transformers-text"
            ]
            if any(e.get("kv_row_tokens") == 2048 < e.get("kv_budget_tokens", 0) for e in engines):
                break
            assert time.monotonic() < deadline, engines
            time.sleep(0.5)
    finally:
        PluginRecord.objects.filter(name="transformers-text").update(config={})
