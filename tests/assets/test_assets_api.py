"""Uploading input assets over real HTTP: stored with sniffed types and header facts, limits refused before storing."""

from __future__ import annotations

import hashlib
import struct
import time
import zlib

import pytest

from aigc_saas.assets.models import Asset
from tests.assets.conftest import audio_bytes, jpeg_bytes, png_bytes, upload, uploaded

pytestmark = pytest.mark.django_db(transaction=True)


def stored_files(settings) -> set:  # noqa: ANN001
    root = settings.MEDIA_ROOT / "assets"
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture
def new_files(settings):  # noqa: ANN001, ANN201
    """Files stored under assets/ since the test began (the media folder is shared by the session)."""
    before = stored_files(settings)
    return lambda: stored_files(settings) - before


def png_bomb(width: int, height: int) -> bytes:
    """A real grayscale PNG of zeros: a few hundred kilobytes that decode to width x height bytes."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_an_uploaded_png_is_stored_with_its_sniffed_type_size_hash_and_dimensions(api) -> None:  # noqa: ANN001
    data = png_bytes(96, 64)
    response = upload(api, data, "mug.png", "image/png")

    assert response.status_code == 201, response.text
    asset = response.json()
    assert (asset["kind"], asset["content_type"], asset["width"], asset["height"]) == ("image", "image/png", 96, 64)
    assert asset["size"] == len(data) and asset["sha256"] == hashlib.sha256(data).hexdigest()
    assert response.headers["Location"] == asset["url"]
    assert api.get(asset["url"]).json()["id"] == asset["id"]
    content = api.get(asset["content_url"])
    assert content.content == data and content.headers["Content-Type"] == "image/png"
    assert [a["id"] for a in api.get("assets").json()["results"]] == [asset["id"]]


@pytest.mark.parametrize(
    ("fmt", "subtype", "filename", "content_type"),
    [
        ("WAV", "PCM_16", "lecture.wav", "audio/wav"),
        ("FLAC", "PCM_16", "lecture.flac", "audio/flac"),
        ("OGG", "VORBIS", "lecture.ogg", "audio/ogg"),
        ("MP3", "MPEG_LAYER_III", "lecture.mp3", "audio/mpeg"),
    ],
)
def test_recordings_are_stored_with_duration_and_sample_rate(api, fmt, subtype, filename, content_type) -> None:  # noqa: ANN001
    asset = uploaded(api, audio_bytes(3.0, 16000, fmt, subtype), filename)

    assert (asset["kind"], asset["content_type"], asset["sample_rate"]) == ("audio", content_type, 16000)
    assert asset["duration"] == pytest.approx(3.0, abs=0.1)  # MP3 frames pad the end slightly
    assert api.get("assets", params={"kind": "audio"}).json()["count"] == 1
    assert api.get("assets", params={"kind": "image"}).json()["count"] == 0


def test_the_type_comes_from_the_bytes_not_the_client(api) -> None:  # noqa: ANN001
    asset = uploaded(api, jpeg_bytes(), "photo", "application/octet-stream")

    assert asset["content_type"] == "image/jpeg" and (asset["width"], asset["height"]) == (80, 48)


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [("photo.png", None), ("photo.jpg", "image/png"), ("photo.jpg", "audio/wav"), ("notes.txt", "image/jpeg")],
)
def test_a_mislabelled_file_is_refused_and_nothing_is_stored(api, new_files, filename, content_type) -> None:  # noqa: ANN001
    response = upload(api, jpeg_bytes(), filename, content_type)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "asset_type_mismatch" and "image/jpeg" in error["message"]
    assert error["fields"][0]["field"] == "file"
    assert Asset.objects.count() == 0 and new_files() == set()


@pytest.mark.parametrize(
    "data", [b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", b"hello, this is text", b"%PDF-1.7\n", b"<svg></svg>"]
)
def test_types_the_platform_does_not_take_are_refused(api, data) -> None:  # noqa: ANN001
    response = upload(api, data, "input")

    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "asset_type_unsupported"
    assert Asset.objects.count() == 0


def test_a_truncated_image_is_refused_as_corrupt(api) -> None:  # noqa: ANN001
    response = upload(api, png_bytes()[:20], "broken.png")

    assert response.status_code == 400 and response.json()["error"]["code"] == "asset_corrupt"


def test_an_oversized_file_is_refused_before_it_is_stored(api, settings, new_files) -> None:  # noqa: ANN001
    settings.AIGC_ASSET_MAX_BYTES = 10_000
    data = audio_bytes(1.0)  # 32 kB of PCM

    response = upload(api, data, "long.wav")

    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "asset_too_large"
    assert "10000" in response.json()["error"]["message"]
    assert Asset.objects.count() == 0 and new_files() == set()


def test_a_body_far_over_the_upload_limit_is_refused_before_it_is_read(api, settings) -> None:  # noqa: ANN001
    settings.AIGC_ASSET_MAX_BYTES = 10_000

    response = upload(api, b"\x00" * 200_000, "big.wav")

    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(api, new_files) -> None:  # noqa: ANN001
    bomb = png_bomb(12_000, 12_000)  # 144 megapixels in ~140 kB
    assert len(bomb) < 1_000_000

    started = time.monotonic()
    response = upload(api, bomb, "bomb.png", "image/png")

    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "image_too_many_pixels" and "12000x12000" in error["message"]
    assert time.monotonic() - started < 5  # decoding 144 MB of pixels would not be this quick on this machine
    assert Asset.objects.count() == 0 and new_files() == set()


def test_a_recording_over_the_duration_limit_is_refused(api, settings) -> None:  # noqa: ANN001
    settings.AIGC_ASSET_MAX_AUDIO_SECONDS = 2

    response = upload(api, audio_bytes(3.0, fmt="FLAC", subtype="PCM_16"), "lecture.flac")

    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "audio_too_long" and "3.0 s" in response.json()["error"]["message"]
    assert Asset.objects.count() == 0


def test_a_tenant_over_its_storage_limit_is_refused_and_others_are_not(api, other_api, settings) -> None:  # noqa: ANN001
    first = png_bytes(96, 64)
    settings.AIGC_ASSET_TENANT_MAX_BYTES = len(first) + 10
    uploaded(api, first, "a.png")

    response = upload(api, png_bytes(96, 64, (0, 0, 0)), "b.png")

    assert response.status_code == 413 and response.json()["error"]["code"] == "asset_storage_full"
    assert Asset.objects.count() == 1
    uploaded(other_api, first, "a.png")  # the limit is per tenant


def test_an_upload_without_the_file_field_names_it(api) -> None:  # noqa: ANN001
    response = api.session.post(api.url("assets"), files={"photo": ("a.png", png_bytes())}, timeout=30)

    assert response.status_code == 400
    assert response.json()["error"]["fields"][0]["field"] == "file"


def test_a_json_body_is_not_an_upload(api) -> None:  # noqa: ANN001
    response = api.post("assets", {"file": "aGVsbG8="})

    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"


def test_another_tenants_asset_is_not_found_for_read_download_or_delete(api, other_api) -> None:  # noqa: ANN001
    asset = uploaded(api, png_bytes(), "mine.png")

    for response in (
        other_api.get(asset["url"]),
        other_api.get(asset["content_url"]),
        other_api.session.delete(asset["url"], timeout=30),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "asset_not_found"
    assert other_api.get("assets").json()["count"] == 0
    assert api.get(asset["content_url"]).status_code == 200


def test_deleting_an_asset_removes_its_file(api, new_files) -> None:  # noqa: ANN001
    asset = uploaded(api, png_bytes(), "mine.png")
    assert len(new_files()) == 1

    response = api.session.delete(asset["url"], timeout=30)

    assert response.status_code == 204
    assert api.get(asset["url"]).status_code == 404
    assert new_files() == set()
