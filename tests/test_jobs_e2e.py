"""Real HTTP → real Redis → a real Celery worker → the real transformers code path → result over HTTP."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_text_job_runs_through_a_worker_and_its_result_comes_back_over_http(api, worker) -> None:  # noqa: ANN001
    job = api.submit("transformers-text", {"prompt": "Write a slogan for a bakery", "max_new_tokens": 12, "seed": 7})
    assert job["state"] == "queued"

    done = api.wait(job)

    assert done["state"] == "succeeded", done
    assert done["progress"]["fraction"] == 1.0
    assert isinstance(done["result"]["text"], str)
    assert done["result"]["metadata"]["completion_tokens"] == 12
    assert done["result"]["metadata"]["device"] == "cpu"
    assert done["attempts"] == 1
    assert done["model_id"].endswith("tiny-llama")


def test_same_seed_gives_the_same_text(api, worker) -> None:  # noqa: ANN001
    params = {"prompt": "Describe a ceramic mug", "max_new_tokens": 8, "seed": 42, "temperature": 1.0}
    first = api.wait(api.submit("transformers-text", params))
    second = api.wait(api.submit("transformers-text", params))
    assert first["result"]["text"] == second["result"]["text"]
