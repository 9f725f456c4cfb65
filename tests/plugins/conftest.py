"""Tiny real models for the built-in plugins' contract runs, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tiny models are local paths: never reach the Hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def contract_image_model(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["diffusers-image"]


@pytest.fixture(scope="session")
def contract_speech_model(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["transformers-speech"]
