"""Jobs on uploaded inputs end to end: HTTP upload → submit → Redis → worker decodes the asset → diffusers / Whisper."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.assets.conftest import audio_bytes, jpeg_bytes, mask_bytes, png_bytes, uploaded

pytestmark = pytest.mark.django_db(transaction=True)


def png_of(api, done: dict) -> Image.Image:  # noqa: ANN001
    assert done["state"] == "succeeded", done["error"]
    [artifact] = done["artifacts"]
    assert artifact["content_type"] == "image/png"
    image = Image.open(io.BytesIO(api.get(artifact["url"]).content))
    assert image.format == "PNG"
    return image


def test_image_to_image_keeps_the_inputs_size_and_records_its_source(api, worker, asset_plugins) -> None:  # noqa: ANN001
    photo = uploaded(api, png_bytes(96, 64), "mug.png")

    done = api.wait(
        api.submit(
            "diffusers-image",
            {"prompt": "the mug on marble", "init_image": photo["id"], "strength": 0.6, "steps": 4, "seed": 3},
        )
    )

    image = png_of(api, done)
    assert image.size == (96, 64)
    record = json.loads(image.text["aigc_saas:record"])
    assert record["mode"] == "image-to-image" and record["strength"] == 0.6
    assert record["inputs"] == {"init_image": photo["id"]} and record["seed"] == 3
    assert done["params"]["init_image"] == photo["id"]  # the job keeps the id, not the pixels


def test_image_to_image_resizes_to_an_asked_size(api, worker, asset_plugins) -> None:  # noqa: ANN001
    photo = uploaded(api, jpeg_bytes(80, 48), "shoe.jpg")

    done = api.wait(
        api.submit("diffusers-image", {"prompt": "a shoe", "init_image": photo["id"], "width": 128, "steps": 2})
    )

    assert png_of(api, done).size == (128, 72)  # the aspect kept, rounded down to a multiple of 8


def test_inpainting_repaints_only_under_the_white_of_the_mask_at_the_images_size(api, worker, asset_plugins) -> None:  # noqa: ANN001
    photo = uploaded(api, png_bytes(96, 64), "product.png")
    mask = uploaded(api, mask_bytes(96, 64), "mask.png")

    done = api.wait(
        api.submit(
            "diffusers-image",
            {"prompt": "on a beach", "image": photo["id"], "mask": mask["id"], "steps": 3, "seed": 1},
        )
    )

    image = png_of(api, done)
    assert image.size == (96, 64)
    record = json.loads(image.text["aigc_saas:record"])
    assert record["mode"] == "inpainting" and record["strength"] == 1.0
    assert record["inputs"] == {"image": photo["id"], "mask": mask["id"]}


@pytest.mark.parametrize("factor", [2, 4])
def test_upscaling_multiplies_the_size(api, worker, asset_plugins, factor) -> None:  # noqa: ANN001
    photo = uploaded(api, png_bytes(64, 48), "small.png")

    done = api.wait(
        api.submit(
            "diffusers-image", {"prompt": "a mug", "image": photo["id"], "upscale": factor, "steps": 2, "seed": 5}
        )
    )

    image = png_of(api, done)
    assert image.size == (64 * factor, 48 * factor)
    record = json.loads(image.text["aigc_saas:record"])
    assert (record["mode"], record["upscale"]) == ("upscaling", factor)
    assert record["upscaler_model_id"].endswith(f"upscaler-x{factor}")


def test_an_earlier_jobs_artifact_is_an_input_by_id(api, worker, asset_plugins) -> None:  # noqa: ANN001
    first = api.wait(api.submit("diffusers-image", {"prompt": "a mug", "width": 64, "height": 64, "steps": 2}))
    artifact = first["artifacts"][0]["id"]

    done = api.wait(api.submit("diffusers-image", {"prompt": "a mug", "image": artifact, "upscale": 2, "steps": 2}))

    assert png_of(api, done).size == (128, 128)


def test_a_recording_is_transcribed_into_text_and_timestamped_segments(api, worker, asset_plugins) -> None:  # noqa: ANN001
    lecture = uploaded(api, audio_bytes(4.0, 44100, "FLAC", "PCM_16"), "lecture.flac")  # resampled to 16 kHz

    done = api.wait(
        api.submit("transformers-transcribe", {"audio": lecture["id"], "language": "en", "max_new_tokens": 24})
    )

    assert done["state"] == "succeeded", done["error"]
    result = done["result"]
    segments = result["data"]["segments"]
    assert result["text"] and segments
    assert result["text"] == " ".join(s["text"] for s in segments)
    assert all(0 <= s["start"] <= s["end"] <= 4.0 for s in segments)
    assert result["metadata"]["duration"] == pytest.approx(4.0) and result["metadata"]["windows"] == 1


def test_long_audio_is_transcribed_in_30_second_windows_on_one_timeline(api, worker, asset_plugins) -> None:  # noqa: ANN001
    lecture = uploaded(api, audio_bytes(65.0, 16000), "lecture.wav")

    done = api.wait(api.submit("transformers-transcribe", {"audio": lecture["id"], "max_new_tokens": 12}))

    assert done["state"] == "succeeded", done["error"]
    segments = done["result"]["data"]["segments"]
    assert done["result"]["metadata"]["windows"] == 3
    assert max(s["end"] for s in segments) > 60  # the third window's segments are placed after its 60 s start
    assert all(s["end"] <= 65.0 for s in segments)


def test_a_speech_jobs_artifact_is_transcribed_by_id(api, worker, asset_plugins) -> None:  # noqa: ANN001
    spoken = api.wait(api.submit("transformers-speech", {"text": "fresh bread every morning", "seed": 2}))
    assert spoken["state"] == "succeeded", spoken["error"]

    done = api.wait(api.submit("transformers-transcribe", {"audio": spoken["artifacts"][0]["id"], "max_new_tokens": 8}))

    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["metadata"]["input"] == spoken["artifacts"][0]["id"]
