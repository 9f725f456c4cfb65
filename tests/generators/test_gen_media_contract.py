"""The built-in media plugins pass the same contract kit a third-party plugin runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from generators.audio_speech import SpeechGenerator
from generators.image_diffusers import ImageGenerator
from generators.testing.contract import PluginContract


class TestImageGeneratorContract(PluginContract):
    plugin = ImageGenerator
    sample_params = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 3}
    invalid_params = [
        ({"prompt": "x", "width": 1024, "height": 2048}, "height"),
        ({"prompt": "x", "width": 60}, "width"),
    ]

    @pytest.fixture(scope="class")
    @classmethod
    def contract_config(cls, tiny_image_model: Path) -> dict[str, Any]:
        return {"model_id": str(tiny_image_model)}


class TestSpeechGeneratorContract(PluginContract):
    plugin = SpeechGenerator
    sample_params = {"text": "Five catchy slogans for a bakery."}
    invalid_params = [({"text": "hello", "speaking_rate": 3.0}, "speaking_rate")]

    @pytest.fixture(scope="class")
    @classmethod
    def contract_config(cls, tiny_speech_model: Path) -> dict[str, Any]:
        return {"model_id": str(tiny_speech_model)}
