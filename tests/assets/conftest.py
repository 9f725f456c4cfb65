"""Input-asset fixtures: sample files made by the real encoders, tiny upscaler and Whisper models, and upload helpers."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import soundfile
from PIL import Image

from aigc_saas.plugins.models import PluginRecord


def png_bytes(
    width: int = 96, height: int = 64, color: tuple[int, int, int] = (200, 40, 40), mode: str = "RGB"
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color if mode == "RGB" else 255).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(width: int = 80, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def mask_bytes(width: int = 96, height: int = 64) -> bytes:
    """White (repaint) on the right half, black (keep) on the left."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 2, 0, width, height))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def audio_bytes(seconds: float = 3.0, rate: int = 16000, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def upload(api: Any, data: bytes, filename: str = "file.bin", content_type: str | None = None) -> requests.Response:
    part = (filename, data, content_type) if content_type else (filename, data)
    return api.session.post(api.url("assets"), files={"file": part}, timeout=30)


def uploaded(api: Any, data: bytes, filename: str, content_type: str | None = None) -> dict[str, Any]:
    response = upload(api, data, filename, content_type)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="session")
def asset_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from generators.testing.tiny_models import build_tiny_upscaler_x2, build_tiny_upscaler_x4, build_tiny_whisper_model

    root = tmp_path_factory.mktemp("asset-models")
    return {
        "upscaler_x2": build_tiny_upscaler_x2(root / "upscaler-x2"),
        "upscaler_x4": build_tiny_upscaler_x4(root / "upscaler-x4"),
        "whisper": build_tiny_whisper_model(root / "whisper"),
    }


@pytest.fixture
def asset_plugins(asset_models: dict[str, Path], tiny_models: dict[str, Path], db: Any) -> None:
    """Point the image plugin's upscalers and the transcription plugin at tiny models, as an admin would."""
    PluginRecord.objects.filter(name="diffusers-image").update(
        model_id=str(tiny_models["diffusers-image"]),
        config={
            "upscaler_x2_model_id": str(asset_models["upscaler_x2"]),
            "upscaler_x4_model_id": str(asset_models["upscaler_x4"]),
        },
    )
    PluginRecord.objects.filter(name="transformers-transcribe").update(model_id=str(asset_models["whisper"]))


@pytest.fixture
def catalogue(db: Any) -> None:
    from scenarios.core.catalogue import load_catalogue

    load_catalogue()
