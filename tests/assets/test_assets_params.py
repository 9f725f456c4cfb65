"""Asset params at submission: typed in the schemas, this tenant's inputs only, accepted types and bounds; decoded
for the plugin on the worker side."""

from __future__ import annotations

import struct
import zlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from aigc_saas.assets.inputs import attach_inputs
from aigc_saas.assets.models import Asset
from aigc_saas.assets.services import store_upload
from aigc_saas.jobs.models import Artifact, Job, JobState
from generators.assets import AudioData
from generators.audio_transcribe import TranscribeGenerator
from generators.errors import GeneratorError
from generators.image_diffusers import ImageGenerator
from tests.assets.conftest import audio_bytes, png_bytes, uploaded

pytestmark = pytest.mark.django_db(transaction=True)


def big_png(width: int, height: int) -> bytes:
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(b"\x00" * (width + 1)) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def artifact_of(tenant, data: bytes, content_type: str, state: str = JobState.SUCCEEDED) -> Artifact:  # noqa: ANN001
    """A finished job's artifact, as the worker leaves it (test data, not a state change under test)."""
    job = Job.objects.create(tenant=tenant, generator="diffusers-image", params={}, queue="cpu", state=state)
    artifact = Artifact(job=job, index=0, filename="image-1.png", content_type=content_type, size=len(data), sha256="0")
    artifact.file.save("image-1.png", ContentFile(data), save=False)
    artifact.save()
    return artifact


def refused(response, status: int, code: str, field: str) -> None:  # noqa: ANN001
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["fields"][0]["field"] == field and f"`{field}`" in error["message"]


def test_generators_and_openapi_show_asset_params_as_typed_ids(api) -> None:  # noqa: ANN001
    schema = api.get("generators/diffusers-image").json()["params_schema"]
    init_image = schema["properties"]["init_image"]["anyOf"][0]
    assert init_image["format"] == "aigc-asset-id"
    assert init_image["x-aigc-asset"]["kind"] == "image"
    assert init_image["x-aigc-asset"]["types"] == ["image/png", "image/jpeg", "image/webp"]
    assert schema["properties"]["mask"]["anyOf"][0]["x-aigc-asset"]["decoded"] == {"mode": "L"}

    openapi = api.session.get(api.url("schema"), headers={"Accept": "application/json"}, timeout=30).json()
    audio = openapi["components"]["schemas"]["TransformersTranscribeParams"]["properties"]["audio"]
    assert audio["format"] == "aigc-asset-id" and audio["x-aigc-asset"]["kind"] == "audio"
    assert audio["x-aigc-asset"]["decoded"] == {"sample_rate": 16000, "mono": True}


def test_another_tenants_asset_in_job_params_is_not_found_and_nothing_is_queued(api, other_api) -> None:  # noqa: ANN001
    theirs = uploaded(other_api, png_bytes(), "theirs.png")

    response = api.post("jobs", {"generator": "diffusers-image", "params": {"prompt": "x", "init_image": theirs["id"]}})

    refused(response, 404, "asset_not_found", "params.init_image")
    assert Job.objects.count() == 0


def test_another_tenants_artifact_in_job_params_is_not_found(api, other_tenant) -> None:  # noqa: ANN001
    theirs = artifact_of(other_tenant, png_bytes(), "image/png")

    response = api.post(
        "jobs", {"generator": "diffusers-image", "params": {"prompt": "x", "image": str(theirs.pk), "upscale": 2}}
    )

    refused(response, 404, "asset_not_found", "params.image")
    assert Job.objects.filter(tenant__slug="acme").count() == 0


def test_an_artifact_of_an_unfinished_job_is_not_an_input(api, tenant) -> None:  # noqa: ANN001
    running = artifact_of(tenant, png_bytes(), "image/png", state=JobState.RUNNING)

    response = api.post(
        "jobs", {"generator": "diffusers-image", "params": {"prompt": "x", "init_image": str(running.pk)}}
    )

    refused(response, 404, "asset_not_found", "params.init_image")


def test_an_unknown_id_is_not_found_and_a_malformed_one_is_invalid(api) -> None:  # noqa: ANN001
    unknown = api.post(
        "jobs",
        {
            "generator": "diffusers-image",
            "params": {"prompt": "x", "init_image": "5f0c7d0e-8a4b-4d3c-9a7e-2b1c3d4e5f60"},
        },
    )
    malformed = api.post("jobs", {"generator": "diffusers-image", "params": {"prompt": "x", "init_image": "mug.png"}})

    refused(unknown, 404, "asset_not_found", "params.init_image")
    refused(malformed, 400, "invalid_params", "params.init_image")


def test_a_recording_is_refused_where_an_image_is_expected_and_the_reverse(api) -> None:  # noqa: ANN001
    recording = uploaded(api, audio_bytes(1.0), "a.wav")
    photo = uploaded(api, png_bytes(), "a.png")

    as_image = api.post(
        "jobs", {"generator": "diffusers-image", "params": {"prompt": "x", "init_image": recording["id"]}}
    )
    as_audio = api.post("jobs", {"generator": "transformers-transcribe", "params": {"audio": photo["id"]}})

    refused(as_image, 400, "asset_type_refused", "params.init_image")
    refused(as_audio, 400, "asset_type_refused", "params.audio")
    assert "audio/wav" in as_image.json()["error"]["message"]


def test_an_image_over_the_inputs_pixel_bound_is_refused_at_submission(api) -> None:  # noqa: ANN001
    poster = uploaded(api, big_png(5000, 4000), "poster.png")  # within the upload limit, over the input's 4096²

    response = api.post("jobs", {"generator": "diffusers-image", "params": {"prompt": "x", "init_image": poster["id"]}})

    refused(response, 400, "image_too_many_pixels", "params.init_image")
    assert "5000x4000" in response.json()["error"]["message"]


def test_an_asset_used_by_a_queued_job_cannot_be_deleted_until_the_job_ends(api, tenant) -> None:  # noqa: ANN001
    photo = uploaded(api, png_bytes(), "in-use.png")
    job = Job.objects.create(
        tenant=tenant, generator="diffusers-image", params={"prompt": "x", "init_image": photo["id"]}, queue="cpu"
    )

    response = api.session.delete(photo["url"], timeout=30)
    assert response.status_code == 409 and response.json()["error"]["code"] == "asset_in_use"
    assert Asset.objects.filter(pk=photo["id"]).exists()

    Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
    assert api.session.delete(photo["url"], timeout=30).status_code == 204


def test_submission_marks_its_inputs_as_just_used(api) -> None:  # noqa: ANN001
    photo = uploaded(api, png_bytes(), "a.png")
    Asset.objects.filter(pk=photo["id"]).update(last_used_at="2020-01-01T00:00:00Z")

    api.submit("diffusers-image", {"prompt": "x", "init_image": photo["id"], "steps": 1})

    assert Asset.objects.get(pk=photo["id"]).last_used_at.year > 2020


def test_the_worker_side_receives_decoded_inputs(tenant) -> None:  # noqa: ANN001
    photo = store_upload(tenant, SimpleUploadedFile("a.png", png_bytes(96, 64), "image/png"))
    recording = store_upload(tenant, SimpleUploadedFile("a.wav", audio_bytes(2.0, 44100), "audio/wav"))
    image_job = Job.objects.create(tenant=tenant, generator="diffusers-image", params={}, queue="cpu")

    params = attach_inputs(
        image_job,
        ImageGenerator.validate_params({"prompt": "x", "image": str(photo.pk), "mask": str(photo.pk)}),
    )
    audio = attach_inputs(image_job, TranscribeGenerator.validate_params({"audio": str(recording.pk)})).audio

    assert isinstance(params.image, Image.Image) and (params.image.mode, params.image.size) == ("RGB", (96, 64))
    assert params.mask.mode == "L"  # the mask input decodes to one channel
    assert params.model_dump(mode="json")["image"] == str(photo.pk)  # stored params keep the id
    assert isinstance(audio, AudioData) and audio.sample_rate == 16000  # resampled for Whisper
    assert audio.waveform.ndim == 1 and audio.duration == pytest.approx(2.0, abs=0.01)


def test_an_input_gone_before_the_worker_runs_fails_the_job_with_a_code(tenant) -> None:  # noqa: ANN001
    photo = store_upload(tenant, SimpleUploadedFile("a.png", png_bytes(), "image/png"))
    job = Job.objects.create(tenant=tenant, generator="diffusers-image", params={}, queue="cpu")
    params = ImageGenerator.validate_params({"prompt": "x", "init_image": str(photo.pk)})
    photo.delete()

    with pytest.raises(GeneratorError) as caught:
        attach_inputs(job, params)

    assert caught.value.code == "asset_missing" and "`params.init_image`" in caught.value.message


@pytest.mark.parametrize(("fmt", "subtype"), [("MP3", "MPEG_LAYER_III"), ("OGG", "VORBIS"), ("OGG", "OPUS")])
def test_compressed_recordings_decode_to_a_waveform_for_the_plugin(fmt: str, subtype: str) -> None:
    from generators.assets import asset_fields, decode

    spec = asset_fields(TranscribeGenerator.Params)["audio"]
    audio = decode(spec, audio_bytes(2.0, 48000, fmt, subtype), asset_id="x")

    assert audio.sample_rate == 16000 and audio.duration == pytest.approx(2.0, abs=0.1)
    assert 0.05 < float(abs(audio.waveform).max()) <= 1.0  # the tone survived the codec
