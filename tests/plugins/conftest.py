"""Tiny real models for the built-in plugins' contract runs, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tiny models are local paths: never reach the Hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def contract_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contract-models")


@pytest.fixture(scope="session")
def contract_image_model(contract_models: Path) -> Path:
    from generators.testing.tiny_models import build_tiny_image_model

    return build_tiny_image_model(contract_models / "image")


@pytest.fixture(scope="session")
def contract_speech_model(contract_models: Path) -> Path:
    from generators.testing.tiny_models import build_tiny_speech_model

    return build_tiny_speech_model(contract_models / "speech")
