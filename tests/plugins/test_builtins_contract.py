"""Every built-in plugin passes the same contract kit a third-party package runs against itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from generators.audio_speech import SpeechGenerator
from generators.image_diffusers import ImageGenerator
from generators.testing.contract import PluginContract
from generators.text_transformers import TextGenerator


class TestTransformersText(PluginContract):
    plugin = TextGenerator
    sample_params = {"prompt": "Write a slogan for a bakery", "max_new_tokens": 6, "seed": 7}

    @pytest.fixture(scope="class")
    @classmethod
    def contract_config(cls, tiny_models: dict[str, Path]) -> dict[str, Any]:
        return {"model_id": str(tiny_models["transformers-text"])}


class TestDiffusersImage(PluginContract):
    plugin = ImageGenerator
    sample_params = {"prompt": "a ceramic mug on a table", "width": 64, "height": 64, "steps": 2, "seed": 1}
    invalid_params = [
        ({"prompt": "x", "width": 1024, "height": 2048}, "height"),
        ({"prompt": "x", "width": 60}, "width"),
    ]

    @pytest.fixture(scope="class")
    @classmethod
    def contract_config(cls, contract_image_model: Path) -> dict[str, Any]:
        return {"model_id": str(contract_image_model)}


class TestTransformersSpeech(PluginContract):
    plugin = SpeechGenerator
    sample_params = {"text": "hello there", "seed": 5}
    invalid_params = [({"text": "hello", "speaking_rate": 3.0}, "speaking_rate")]

    @pytest.fixture(scope="class")
    @classmethod
    def contract_config(cls, contract_speech_model: Path) -> dict[str, Any]:
        return {"model_id": str(contract_speech_model)}
