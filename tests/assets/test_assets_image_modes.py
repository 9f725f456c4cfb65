"""The image generator's input modes on tiny real pipelines: seeds repeat, progress moves forward, cancel stops,
and the record says what was done to which input."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from generators.assets import with_inputs
from generators.base import LocalContext
from generators.errors import GeneratorError, JobCancelled
from generators.image_diffusers import ImageGenerator, output_size
from hardware import DeviceChoice

ID = "5f0c7d0e-8a4b-4d3c-9a7e-2b1c3d4e5f60"


@pytest.fixture(scope="module")
def plugin(tiny_models: dict[str, Path], asset_models: dict[str, Path]) -> ImageGenerator:
    config = ImageGenerator.Config(
        model_id=str(tiny_models["diffusers-image"]),
        upscaler_x2_model_id=str(asset_models["upscaler_x2"]),
        upscaler_x4_model_id=str(asset_models["upscaler_x4"]),
    )
    generator = ImageGenerator(config)
    generator.setup(DeviceChoice(device="cpu", dtype="float32"))
    return generator


def photo(width: int = 96, height: int = 64) -> Image.Image:
    image = Image.new("RGB", (width, height), (180, 40, 40))
    image.info["aigc_asset_id"] = ID
    return image


def params(raw: dict, **inputs: Image.Image):  # noqa: ANN201
    return with_inputs(ImageGenerator.validate_params(raw), inputs)


def pixels(result) -> bytes:  # noqa: ANN001
    return Image.open(io.BytesIO(result.files[0].data)).tobytes()


def test_image_to_image_repeats_with_its_seed_and_changes_without(plugin: ImageGenerator) -> None:
    raw = {"prompt": "a mug", "init_image": ID, "steps": 4, "strength": 0.8}

    first = plugin.generate(params(raw | {"seed": 5}, init_image=photo()), LocalContext())
    again = plugin.generate(params(raw | {"seed": 5}, init_image=photo()), LocalContext())
    other = plugin.generate(params(raw | {"seed": 6}, init_image=photo()), LocalContext())

    assert pixels(first) == pixels(again) != pixels(other)
    assert first.metadata["seed"] == 5 and first.files[0].metadata["inputs"] == {"init_image": ID}


def test_strength_sets_how_many_steps_run_and_progress_moves_forward(plugin: ImageGenerator) -> None:
    ctx = LocalContext()
    plugin.generate(
        params({"prompt": "a mug", "init_image": ID, "steps": 10, "strength": 0.5}, init_image=photo()), ctx
    )

    fractions = [f for f, _ in ctx.reports]
    assert len(fractions) == 5 + 1  # half the schedule is denoised, then the encoded file
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_a_cancel_request_stops_image_to_image_and_upscaling(plugin: ImageGenerator) -> None:
    for raw, inputs in (
        ({"prompt": "a mug", "init_image": ID, "steps": 8}, {"init_image": photo()}),
        ({"prompt": "a mug", "image": ID, "upscale": 4, "steps": 8}, {"image": photo(64, 48)}),
    ):
        ctx = LocalContext(cancel_after=1)
        with pytest.raises(JobCancelled):
            plugin.generate(params(raw, **inputs), ctx)
        assert len(ctx.reports) == 1


def test_the_upscaled_size_is_the_input_times_the_factor(plugin: ImageGenerator) -> None:
    result = plugin.generate(
        params({"prompt": "a mug", "image": ID, "upscale": 2, "steps": 2, "seed": 1}, image=photo(70, 50)),
        LocalContext(),
    )

    assert Image.open(io.BytesIO(result.files[0].data)).size == (128, 96)  # cropped to 64x48 (multiples of 8), x2
    assert result.metadata["input_size"] == [70, 50]


def test_an_input_too_large_for_the_x4_upscaler_fails_with_a_code(plugin: ImageGenerator) -> None:
    with pytest.raises(GeneratorError) as caught:
        plugin.generate(params({"prompt": "a mug", "image": ID, "upscale": 4}, image=photo(1024, 512)), LocalContext())

    assert caught.value.code == "image_too_large" and "`params.image`" in caught.value.message


@pytest.mark.parametrize(
    ("source", "width", "height", "expected"),
    [
        ((96, 64), None, None, (96, 64)),
        ((4000, 3000), None, None, (1176, 880)),  # scaled to fit one megapixel, aspect kept
        ((80, 48), 128, None, (128, 72)),
        ((80, 48), None, 96, (160, 96)),
        ((80, 48), 256, 256, (256, 256)),
        ((30, 20), None, None, (64, 64)),  # never below the model's minimum
    ],
)
def test_output_size_rules(source, width, height, expected) -> None:  # noqa: ANN001
    assert output_size(source, width, height) == expected
