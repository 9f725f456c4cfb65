"""A job's life seen by an operator, through real processes: the web (its several processes) and a worker
each expose Prometheus metrics; every log line of the job names it and its tenant; no progress bars."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
import requests

from tests.ops.conftest import scrape, value, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
TERMINAL = {"succeeded", "failed", "cancelled"}


class Client:
    def __init__(self, base: str, key: str) -> None:
        self.base = f"{base}/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def submit(self, generator: str, params: dict[str, Any]) -> dict[str, Any]:
        response = self.session.post(f"{self.base}/jobs", json={"generator": generator, "params": params}, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()

    def wait(self, job: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            current = self.session.get(f"{self.base}/jobs/{job['id']}", timeout=30).json()
            return current if current["state"] in TERMINAL else None

        return wait_for(finished, timeout, f"job {job['id']} did not finish")


@pytest.fixture
def ran(ops_web, ops_worker, pinned_to_ops_queue, tenant_key) -> dict[str, Any]:  # noqa: ANN001
    """A text and an image job through the web subprocess and the ops worker, with scrapes before and after."""
    client = Client(ops_web.url, tenant_key[1])
    before_web, before_worker = scrape(f"{ops_web.url}/metrics"), scrape(ops_worker.metrics_url)
    for _ in range(6):
        assert client.session.get(f"{client.base}/generators", timeout=30).status_code == 200
    text = client.wait(client.submit("transformers-text", {"prompt": "Slogan for a bakery", "max_new_tokens": 6}))
    image = client.wait(
        client.submit("diffusers-image", {"prompt": "a red mug", "width": 64, "height": 64, "steps": 2, "seed": 1})
    )
    assert text["state"] == image["state"] == "succeeded", (text, image)
    return {
        "text": text,
        "image": image,
        "before_web": before_web,
        "before_worker": before_worker,
        "tenant": str(tenant_key[0].tenant_id),
    }


def deltas(after: dict, before: dict) -> Any:
    return lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)


def test_the_web_counts_requests_of_all_its_processes_and_submissions(ran, ops_web) -> None:  # noqa: ANN001
    after = scrape(f"{ops_web.url}/metrics")
    delta = deltas(after, ran["before_web"])

    # Six requests spread over the server's processes: one scrape counts all six.
    assert delta("aigc_api_requests_total", route="api/v1/generators", status="200", method="GET") == 6
    assert delta("aigc_api_request_duration_seconds_count", route="api/v1/generators") == 6
    assert delta("aigc_jobs_total", generator="transformers-text", state="queued") == 1
    assert delta("aigc_jobs_total", generator="diffusers-image", state="queued") == 1
    assert ("aigc_queue_depth", (("queue", "cpu"),)) in after
    assert ("aigc_broker_queue_length", (("queue", "control"),)) in after


def test_a_worker_exports_job_outcomes_throughput_models_and_devices(ran, ops_worker) -> None:  # noqa: ANN001
    text_device = ran["text"]["result"]["metadata"]["device"]

    def sampled() -> dict | None:  # counted just after the commit the client saw, sampled after the task
        samples = scrape(ops_worker.metrics_url)
        done = deltas(samples, ran["before_worker"])("aigc_jobs_total", state="succeeded") == 2
        return samples if done and value(samples, "aigc_model_load_seconds_count") >= 2 else None

    samples = wait_for(sampled, 15, "the worker did not export both jobs and both model loads")
    delta = deltas(samples, ran["before_worker"])

    assert delta("aigc_jobs_total", generator="transformers-text", state="succeeded") == 1
    assert delta("aigc_jobs_total", generator="diffusers-image", state="succeeded") == 1
    assert delta("aigc_job_duration_seconds_count", generator="transformers-text") == 1
    assert delta("aigc_job_queue_seconds_count", generator="transformers-text", queue="ops") == 1
    assert (
        delta("aigc_generated_tokens_total", generator="transformers-text")
        == (ran["text"]["result"]["metadata"]["completion_tokens"])
    )
    assert delta("aigc_job_tokens_per_second_count", generator="transformers-text") == 1
    assert delta("aigc_generated_images_total", generator="diffusers-image") == 1
    assert delta("aigc_job_images_per_second_count", generator="diffusers-image") == 1
    # Loads are counted, and these two jobs loaded the text model at most once (the cache keeps it; an earlier
    # test of this module may already have loaded it under a configuration of its own).
    assert value(samples, "aigc_model_load_seconds_count", generator="transformers-text", device=text_device) >= 1
    assert delta("aigc_model_load_seconds_count", generator="transformers-text", device=text_device) <= 1
    assert value(samples, "aigc_model_cache_used_bytes", device=text_device) > 0
    assert value(samples, "aigc_model_cache_entries", device=text_device) >= 2  # both models stay loaded
    assert value(samples, "aigc_device_memory_total_bytes", device="cpu") > 0
    assert value(samples, "aigc_device_memory_free_bytes", device="cpu") > 0
    # The serving engine that ran the text job: its capacity and what it has done.
    assert value(samples, "aigc_engine_max_rows", generator="transformers-text", device=text_device) >= 1
    assert value(samples, "aigc_engine_items", generator="transformers-text") >= 1
    assert value(samples, "aigc_engine_tokens", generator="transformers-text") > 0  # sampled: may trail a step
    steps = value(samples, "aigc_engine_steps", generator="transformers-text")
    assert steps >= 1
    assert 1 <= value(samples, "aigc_engine_rows_stepped", generator="transformers-text") / steps <= 64  # mean batch
    assert value(samples, "aigc_engine_step_seconds", generator="transformers-text") > 0
    assert 1 <= value(samples, "aigc_engine_prefill_steps", generator="transformers-text") <= steps
    assert value(samples, "aigc_engine_emit_seconds", generator="transformers-text") > 0
    assert value(samples, "aigc_engine_running_rows", generator="transformers-text") == 0  # idle now


def json_lines(log: str) -> list[dict[str, Any]]:
    lines = []
    for line in log.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


def test_every_log_line_of_a_job_names_it_and_its_tenant_in_web_and_worker(ran, ops_web, ops_worker) -> None:  # noqa: ANN001
    job_id, tenant = ran["text"]["id"], ran["tenant"]
    time.sleep(0.5)  # the worker logs "succeeded" after committing the state the client saw

    web = [line for line in json_lines(ops_web.log()) if job_id in json.dumps(line)]
    worker = [line for line in json_lines(ops_worker.log()) if job_id in json.dumps(line)]

    assert any("job queued" in line["message"] for line in web), web
    assert any("job succeeded" in line["message"] for line in worker), worker
    assert any("succeeded in" in line["message"] for line in worker), worker  # Celery's own task line
    for line in web + worker:
        assert (line["job_id"], line["tenant_id"]) == (job_id, tenant), line
        assert {"time", "level", "logger", "message"} <= set(line)


def test_worker_logs_carry_no_progress_bars_and_no_stderr_warnings(ran, ops_worker) -> None:  # noqa: ANN001
    log = ops_worker.log()

    assert not re.search(r"\d+%\|", log), log[-3000:]  # a tqdm bar: "100%|██████| 2/2"
    redirected = [line for line in json_lines(log) if line["logger"] == "celery.redirected"]
    assert redirected == [], redirected
