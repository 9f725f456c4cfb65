"""Image and speech jobs end to end: HTTP → Redis → worker → diffusers / transformers → artifact over HTTP."""

from __future__ import annotations

import io
import time

import pytest
import soundfile
from PIL import Image

from aigc_saas.jobs.models import WorkerStatus
from aigc_saas.plugins.services import plugin_class
from hardware import select_device

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_image_job_gives_a_png_of_the_asked_size_with_its_generation_record(api, worker) -> None:  # noqa: ANN001
    job = api.submit(
        "diffusers-image", {"prompt": "a red ceramic mug", "width": 64, "height": 96, "steps": 3, "seed": 11}
    )
    done = api.wait(job)

    assert done["state"] == "succeeded", done["error"]
    artifact = done["artifacts"][0]
    assert artifact["content_type"] == "image/png"
    response = api.get(artifact["url"])
    assert response.status_code == 200
    assert response.headers["X-Content-SHA256"] == artifact["sha256"]
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.size == (64, 96)
    assert image.text["seed"] == "11" and image.text["steps"] == "3"
    choice = select_device(plugin_class("diffusers-image").needs)  # what this machine gives it, CUDA or CPU
    assert (artifact["metadata"]["device"], artifact["metadata"]["dtype"]) == (choice.device, choice.dtype)


def test_a_speech_job_gives_a_wav_of_the_recorded_duration(api, worker) -> None:  # noqa: ANN001
    done = api.wait(
        api.submit("transformers-speech", {"text": "Fresh bread every morning.", "speaker_id": 1, "seed": 3})
    )

    assert done["state"] == "succeeded", done["error"]
    artifact = done["artifacts"][0]
    audio, rate = soundfile.read(io.BytesIO(api.get(artifact["url"]).content))
    assert artifact["content_type"] == "audio/wav"
    assert rate == artifact["metadata"]["sample_rate"]
    assert len(audio) / rate == pytest.approx(artifact["metadata"]["duration_seconds"], abs=1e-3)


def test_a_loaded_model_is_reused_by_the_next_job_and_the_worker_reports_it(api, worker) -> None:  # noqa: ANN001
    params = {"text": "Reuse me.", "seed": 1}
    api.wait(api.submit("transformers-speech", params))
    api.wait(api.submit("transformers-speech", params))

    deadline = time.monotonic() + 10
    entries = []
    while time.monotonic() < deadline:
        status = WorkerStatus.objects.filter(name__endswith=f":{worker.process.pid}").first()  # this worker's
        entries = [e for e in (status.cache.get("entries", []) if status else []) if "transformers-speech" in e["key"]]
        if entries and entries[0]["hits"] >= 1:
            break
        time.sleep(0.2)
    assert len(entries) == 1
    assert entries[0]["hits"] >= 1
    assert {"control", "cpu"} <= set(status.queues)  # the queues the worker consumes, declared at start
    assert status.cache["devices"][select_device(plugin_class("transformers-speech").needs).device]["used_bytes"] > 0
