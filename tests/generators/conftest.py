"""Tiny real models, built once per test session, and the built-in media plugins loaded on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tiny models are local paths: never reach the Hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_image_model(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["diffusers-image"]


@pytest.fixture(scope="session")
def tiny_speech_model(tiny_models_dir: Path) -> Path:
    from generators.testing.tiny_models import build_tiny_speech_model

    return build_tiny_speech_model(tiny_models_dir / "speech")


@pytest.fixture(scope="session")
def tiny_multi_speaker_model(tiny_models_dir: Path) -> Path:
    from generators.testing.tiny_models import build_tiny_speech_model

    return build_tiny_speech_model(tiny_models_dir / "speech-3-voices", num_speakers=3)


@pytest.fixture(scope="session")
def image_plugin(tiny_image_model: Path):  # noqa: ANN201
    from generators.image_diffusers import ImageGenerator
    from hardware import DeviceChoice

    plugin = ImageGenerator(ImageGenerator.Config(model_id=str(tiny_image_model)))
    plugin.setup(DeviceChoice(device="cpu", dtype="float32"))
    return plugin


@pytest.fixture(scope="session")
def speech_plugin(tiny_speech_model: Path):  # noqa: ANN201
    from generators.audio_speech import SpeechGenerator
    from hardware import DeviceChoice

    plugin = SpeechGenerator(SpeechGenerator.Config(model_id=str(tiny_speech_model)))
    plugin.setup(DeviceChoice(device="cpu", dtype="float32"))
    return plugin
