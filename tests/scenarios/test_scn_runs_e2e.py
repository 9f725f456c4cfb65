"""Template and recipe runs end to end: real HTTP, Redis, a Celery worker and tiny text, image and speech models."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def wait_run(api, run: dict, timeout: float = 120) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = api.get(run["url"]).json()
        if current["state"] != "running":
            return current
        time.sleep(0.3)
    raise AssertionError(f"run {run['id']} did not finish in {timeout}s: {current}")


def template_url(api, scenario: str, slug: str) -> str:  # noqa: ANN001
    found = api.get(f"scenarios/{scenario}/templates", params={"page_size": 100}).json()["results"]
    return next(t["url"] for t in found if t["slug"] == slug)


def test_a_template_run_is_an_ordinary_job_that_records_its_template_and_version(api, worker, catalogue) -> None:  # noqa: ANN001
    url = template_url(api, "ecommerce", "product-title")
    body = {"variables": {"product": "oak chopping board 40 cm", "brand": "Woodly"}, "params": {"max_new_tokens": 8}}

    started = api.post(f"{url}/runs", body)
    assert started.status_code == 202, started.text
    run = wait_run(api, started.json())

    assert run["state"] == "succeeded", run
    job = api.get(run["steps"][0]["job"]["url"]).json()
    assert job["state"] == "succeeded"
    assert job["origin"] | {"run": run["id"]} == job["origin"]
    assert (job["origin"]["template"], job["origin"]["version"]) == ("product-title", 1)
    assert job["params"]["max_new_tokens"] == 8 and "Woodly" in job["params"]["prompt"]
    assert run["result"]["text"] == job["result"]["text"]
    assert any(j["id"] == job["id"] for j in api.get("jobs").json()["results"])


def test_a_recipe_chains_text_image_and_speech_feeding_each_step_the_last(
    api, worker, catalogue, media_plugins
) -> None:  # noqa: ANN001
    body = {
        "variables": {
            "business": "FixIt Plumbing",
            "problem": "a leaking boiler on a cold weekend",
            "offer": "an engineer within two hours",
            "visual": "a plumber fixing a boiler",
        },
        "params": {
            "ad_copy": {"max_new_tokens": 12, "seed": 1},
            "banner": {"width": 64, "height": 64, "steps": 2, "seed": 1},
            "voice": {"seed": 1},
        },
    }

    started = api.post("recipes/campaign-kit/runs", body)
    assert started.status_code == 202, started.text
    run = wait_run(api, started.json())

    assert run["state"] == "succeeded", (run["error"], [(s["name"], s["error"]) for s in run["steps"]])
    copy, banner, voice = run["steps"]
    assert [s["state"] for s in run["steps"]] == ["succeeded"] * 3
    assert banner["output"]["artifacts"][0]["content_type"] == "image/png"
    assert voice["output"]["artifacts"][0]["content_type"] == "audio/wav"
    voice_job = api.get(voice["job"]["url"]).json()
    assert copy["output"]["text"][:200] in voice_job["params"]["text"] or not copy["output"]["text"]
    assert voice_job["origin"]["recipe"] == "campaign-kit" and voice_job["origin"]["step"] == "voice"


def test_a_structured_step_the_model_cannot_satisfy_fails_the_recipe_naming_the_step(api, worker, catalogue) -> None:  # noqa: ANN001
    body = {
        "variables": {"subject": "bookkeeping basics", "audience": "sole traders"},
        "params": {"outline": {"max_new_tokens": 12, "seed": 3}},
    }

    run = wait_run(api, api.post("recipes/lesson-pack/runs", body).json())

    # Decoding is constrained to the schema, so the only way to miss it is a budget too small to finish it.
    assert run["state"] == "failed", run
    assert run["error"]["code"] == "structured_output_truncated"
    assert run["error"]["step"] == "outline"
    outline = run["steps"][0]
    assert outline["job"]["state"] == "failed" and outline["repair_job"] is None
    assert [s["state"] for s in run["steps"][1:]] == ["cancelled", "cancelled"]
