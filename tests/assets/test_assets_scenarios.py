"""Scenario templates and recipes on inputs: the seeded asset templates, the lecture-notes recipe end to end, and
another tenant's asset refused in template and recipe runs."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from aigc_saas.jobs.models import Job
from scenarios.core.models import Run
from tests.assets.conftest import audio_bytes, mask_bytes, png_bytes, uploaded

pytestmark = pytest.mark.django_db(transaction=True)


def wait_run(api, run: dict, timeout: float = 180) -> dict:  # noqa: ANN001
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


def test_asset_variables_are_typed_ids_in_the_template_schema(api, catalogue) -> None:  # noqa: ANN001
    template = api.get(template_url(api, "ecommerce", "product-background")).json()
    schema = template["variables_schema"]

    for name in ("photo", "mask"):
        assert schema["properties"][name]["format"] == "aigc-asset-id"
        assert schema["properties"][name]["x-aigc-asset"] == {"kind": "image"}


def test_the_lecture_notes_recipe_transcribes_then_writes_notes_from_the_transcript(
    api, worker, catalogue, asset_plugins
) -> None:  # noqa: ANN001
    lecture = uploaded(api, audio_bytes(6.0, 16000), "lecture.wav")
    body = {
        "variables": {"recording": lecture["id"], "topic": "the water cycle", "level": "lower secondary"},
        "params": {"transcript": {"max_new_tokens": 16, "language": "en"}, "notes": {"max_new_tokens": 8, "seed": 1}},
    }

    started = api.post("recipes/lecture-notes/runs", body)
    assert started.status_code == 202, started.text
    run = wait_run(api, started.json())

    assert run["state"] == "succeeded", run
    transcript_job = api.get(run["steps"][0]["job"]["url"]).json()
    notes_job = api.get(run["steps"][1]["job"]["url"]).json()
    assert transcript_job["generator"] == "transformers-transcribe"
    assert transcript_job["params"]["audio"] == lecture["id"]
    transcript = transcript_job["result"]["text"]
    assert transcript and transcript_job["result"]["data"]["segments"]
    assert notes_job["generator"] == "transformers-text"
    assert transcript[:200] in notes_job["params"]["prompt"]  # the notes are written from the transcript
    assert "the water cycle" in notes_job["params"]["prompt"]
    assert run["result"]["text"] == notes_job["result"]["text"]


def test_a_recipe_step_can_take_an_earlier_steps_artifact(api, worker, catalogue, asset_plugins) -> None:  # noqa: ANN001
    """A tenant recipe of seeded templates: an illustration, then the campaign restyle of that very image."""
    from scenarios.core.recipes import save_recipe

    save_recipe(
        {
            "scenario": "marketing",
            "slug": "banner-then-restyle",
            "title": "Banner, then restyled",
            "variables": [{"name": "concept", "type": "text", "description": "What to draw."}],
            "steps": [
                {
                    "name": "draw",
                    "template": "education/illustration",
                    "variables": {"concept": "{{ inputs.concept }}"},
                },
                {
                    "name": "restyle",
                    "template": "marketing/restyle-brand-image",
                    "variables": {"image": "{{ steps.draw.artifacts[0].id }}", "campaign": "spring sale"},
                },
            ],
            "sample_variables": {"concept": "a bakery"},
        }
    )
    body = {
        "variables": {"concept": "a bakery window"},
        "params": {"draw": {"width": 64, "height": 64, "steps": 2}, "restyle": {"steps": 2, "seed": 4}},
    }

    run = wait_run(api, api.post("recipes/banner-then-restyle/runs", body).json())

    assert run["state"] == "succeeded", run
    drawn = api.get(run["steps"][0]["job"]["url"]).json()["artifacts"][0]
    restyled = api.get(run["steps"][1]["job"]["url"]).json()
    assert restyled["params"]["init_image"] == drawn["id"]
    image = Image.open(io.BytesIO(api.get(restyled["artifacts"][0]["url"]).content))
    assert image.size == (64, 64)  # image-to-image keeps the drawn image's size


def test_the_product_background_template_inpaints_the_uploaded_photo(api, worker, catalogue, asset_plugins) -> None:  # noqa: ANN001
    photo = uploaded(api, png_bytes(96, 64), "mug.png")
    mask = uploaded(api, mask_bytes(96, 64), "mask.png")
    body = {
        "variables": {"photo": photo["id"], "mask": mask["id"], "scene": "on a marble kitchen counter"},
        "params": {"steps": 2, "seed": 9},
    }

    run = wait_run(api, api.post(f"{template_url(api, 'ecommerce', 'product-background')}/runs", body).json())

    assert run["state"] == "succeeded", run
    job = api.get(run["steps"][0]["job"]["url"]).json()
    assert (job["params"]["image"], job["params"]["mask"]) == (photo["id"], mask["id"])
    assert job["artifacts"][0]["metadata"]["mode"] == "inpainting"
    assert Image.open(io.BytesIO(api.get(job["artifacts"][0]["url"]).content)).size == (96, 64)


def test_another_tenants_asset_is_refused_in_template_and_recipe_runs(api, other_api, catalogue) -> None:  # noqa: ANN001
    theirs_photo = uploaded(other_api, png_bytes(), "theirs.png")
    theirs_audio = uploaded(other_api, audio_bytes(1.0), "theirs.wav")
    template = template_url(api, "ecommerce", "product-variations")

    template_run = api.post(f"{template}/runs", {"variables": {"photo": theirs_photo["id"], "product": "a mug"}})
    recipe_run = api.post(
        "recipes/lecture-notes/runs", {"variables": {"recording": theirs_audio["id"], "topic": "history"}}
    )

    for response, field in ((template_run, "params.init_image"), (recipe_run, "params.audio")):
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["code"] == "asset_not_found" and error["fields"][0]["field"] == field
    assert Run.objects.count() == 0 and Job.objects.count() == 0


def test_a_non_id_in_an_asset_variable_is_refused_naming_the_variable(api, catalogue) -> None:  # noqa: ANN001
    template = template_url(api, "marketing", "restyle-brand-image")

    response = api.post(f"{template}/runs", {"variables": {"image": "logo.png", "campaign": "spring"}})

    assert response.status_code == 400
    assert response.json()["error"]["fields"][0]["field"] == "variables.image"
