"""Scenario fixtures: the seeded catalogue, and tiny image/speech models the worker loads through the plugin records."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigc_saas.plugins.models import PluginRecord
from scenarios.core.catalogue import load_catalogue


@pytest.fixture
def catalogue(db) -> None:  # noqa: ANN001
    load_catalogue()


@pytest.fixture(scope="session")
def media_models(tiny_models, tmp_path_factory) -> dict[str, Path]:  # noqa: ANN001
    """Tiny image and speech models: from `tiny_models` where it has them, else built here."""
    from generators.testing.tiny_models import build_tiny_image_model, build_tiny_speech_model

    root = tmp_path_factory.mktemp("scenario-models")
    return {
        "diffusers-image": tiny_models.get("diffusers-image") or build_tiny_image_model(root / "image"),
        "transformers-speech": tiny_models.get("transformers-speech") or build_tiny_speech_model(root / "speech"),
    }


@pytest.fixture
def media_plugins(media_models, db) -> None:  # noqa: ANN001
    """Point the image and speech plugins at the tiny models, as an admin would: the worker reads the record."""
    for name, path in media_models.items():
        PluginRecord.objects.filter(name=name).update(model_id=str(path))
