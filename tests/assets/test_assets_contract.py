"""The contract kit on asset inputs: the built-ins that take inputs pass it with sample files, and it names what an
asset-taking plugin gets wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from generators.assets import AudioInput, ImageInput, image_input
from generators.audio_transcribe import TranscribeGenerator
from generators.base import GenerationContext, GenerationResult, Generator, GeneratorConfig, Modality
from generators.image_diffusers import ImageGenerator
from generators.testing.checks import asset_problems
from generators.testing.contract import PluginContract
from tests.assets.conftest import audio_bytes, mask_bytes, png_bytes

SOME_ID = "5f0c7d0e-8a4b-4d3c-9a7e-2b1c3d4e5f60"


class TestTranscribeContract(PluginContract):
    plugin = TranscribeGenerator
    sample_params = {"audio": SOME_ID, "language": "en", "max_new_tokens": 6}
    sample_inputs = {"audio": audio_bytes(2.0, 22050, "FLAC", "PCM_16")}
    invalid_params = [({"audio": SOME_ID, "language": "english"}, "language"), ({"audio": 7}, "audio")]

    @pytest.fixture(scope="class")
    @classmethod
    def contract_config(cls, asset_models: dict[str, Path]) -> dict[str, Any]:
        return {"model_id": str(asset_models["whisper"])}


class TestImageInpaintingContract(PluginContract):
    plugin = ImageGenerator
    sample_params = {"prompt": "a mug on a beach", "image": SOME_ID, "mask": SOME_ID, "steps": 2, "seed": 1}
    sample_inputs = {"image": png_bytes(64, 64), "mask": mask_bytes(64, 64)}
    invalid_params = [
        ({"prompt": "x", "mask": SOME_ID}, "mask"),
        ({"prompt": "x", "image": SOME_ID}, "upscale"),
        ({"prompt": "x", "strength": 0.5}, "strength"),
        ({"prompt": "x", "init_image": SOME_ID, "image": SOME_ID, "mask": SOME_ID}, "image"),
        ({"prompt": "x", "image": SOME_ID, "upscale": 4, "width": 512}, "upscale"),
        ({"prompt": "x", "image": SOME_ID, "upscale": 3}, "upscale"),
    ]

    @pytest.fixture(scope="class")
    @classmethod
    def contract_config(cls, tiny_models: dict[str, Path]) -> dict[str, Any]:
        return {"model_id": str(tiny_models["diffusers-image"])}


class _Config(GeneratorConfig):
    model_id: str = Field(default="m", description="-")


def plugin_with(params_model: type[BaseModel]) -> type[Generator]:
    class Plugin(Generator):
        """A test plugin."""

        name = "probe"
        modality = Modality.IMAGE
        Params = params_model
        Config = _Config

        def generate(self, params: Any, ctx: GenerationContext) -> GenerationResult:
            return GenerationResult()

    return Plugin


class OneImage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    photo: ImageInput = Field(description="A photo.")


def test_an_asset_in_the_sample_without_its_file_is_named() -> None:
    problems = asset_problems(plugin_with(OneImage), {"photo": SOME_ID}, {})

    assert len(problems) == 1 and "sample_inputs['photo']" in problems[0]


def test_a_sample_file_the_input_refuses_is_named_with_the_reason() -> None:
    problems = asset_problems(plugin_with(OneImage), {"photo": SOME_ID}, {"photo": audio_bytes(0.5)})

    assert len(problems) == 1 and "asset_type_refused" in problems[0]


def test_a_sample_image_over_the_inputs_bounds_is_named() -> None:
    class Small(BaseModel):
        model_config = ConfigDict(extra="forbid")
        photo: image_input(max_pixels=100) = Field(description="A thumbnail.")

    problems = asset_problems(plugin_with(Small), {"photo": SOME_ID}, {"photo": png_bytes(64, 64)})

    assert len(problems) == 1 and "image_too_many_pixels" in problems[0]


def test_an_asset_hidden_in_a_list_is_named() -> None:
    class Gallery(BaseModel):
        model_config = ConfigDict(extra="forbid")
        photos: list[ImageInput] = Field(max_length=4, description="Photos.")

    problems = asset_problems(plugin_with(Gallery), {"photos": []}, {})

    assert len(problems) == 1 and "`Gallery.photos` hides an asset input" in problems[0]


def test_a_sample_file_for_a_field_that_is_not_an_input_is_named() -> None:
    problems = asset_problems(plugin_with(OneImage), {"photo": SOME_ID}, {"photo": png_bytes(), "voice": b"x"})

    assert problems == ["`sample_inputs['voice']` is given but `OneImage.voice` is not an asset input"]


def test_a_well_declared_audio_input_passes() -> None:
    class Voice(BaseModel):
        model_config = ConfigDict(extra="forbid")
        voice: AudioInput = Field(description="A voice note.")

    assert asset_problems(plugin_with(Voice), {"voice": SOME_ID}, {"voice": audio_bytes(0.5)}) == []
