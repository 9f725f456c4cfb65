"""Usage metering: what each built-in reports, turned into tokens, megapixel-steps, audio seconds and run time."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from aigc_saas.usage.metering import USAGE_FIELDS, measure_usage
from generators.base import GenerationResult, LocalContext, OutputFile
from hardware import DeviceChoice

CPU = DeviceChoice(device="cpu", dtype="float32")


def job(**params: object) -> SimpleNamespace:
    return SimpleNamespace(params=params, generator="x")


def test_text_usage_counts_prompt_and_completion_tokens() -> None:
    result = GenerationResult(text="hi", metadata={"prompt_tokens": 12, "completion_tokens": 7})
    usage = measure_usage(job(prompt="p"), result, 0.25)
    assert usage == {
        "tokens_in": 12,
        "tokens_out": 7,
        "images": 0,
        "image_megapixel_steps": 0,
        "audio_seconds": 0,
        "run_seconds": 0.25,
    }
    assert tuple(usage) == USAGE_FIELDS


def test_image_usage_is_width_times_height_times_steps_per_image() -> None:
    meta = {"width": 512, "height": 768, "steps": 20}
    files = [OutputFile(f"image-{i}.png", "image/png", b"png", meta | {"index": i}) for i in range(3)]
    usage = measure_usage(job(width=512, height=768, steps=20, num_images=3), GenerationResult(files=files), 4.0)
    assert usage["images"] == 3
    assert usage["image_megapixel_steps"] == pytest.approx(3 * 512 * 768 * 20 / 1e6)


def test_image_size_falls_back_to_the_job_params_when_files_do_not_record_it() -> None:
    files = [OutputFile("image-1.png", "image/png", b"png", {})]
    usage = measure_usage(job(width=256, height=256, steps=10), GenerationResult(files=files), 1.0)
    assert usage["image_megapixel_steps"] == pytest.approx(256 * 256 * 10 / 1e6)


def test_audio_usage_sums_the_duration_of_each_file() -> None:
    files = [
        OutputFile("a.wav", "audio/wav", b"", {"duration_seconds": 1.5}),
        OutputFile("b.wav", "audio/wav", b"", {"duration_seconds": 2.25}),
    ]
    assert measure_usage(job(), GenerationResult(files=files), 0.5)["audio_seconds"] == 3.75


@pytest.mark.parametrize("bad", [None, "12", -3, float("nan"), True, {"n": 1}])
def test_missing_or_odd_numbers_count_as_zero_never_raise(bad: object) -> None:
    result = GenerationResult(metadata={"prompt_tokens": bad, "completion_tokens": bad, "duration_seconds": bad})
    usage = measure_usage(job(width=bad), result, -1.0)
    assert usage == dict.fromkeys(USAGE_FIELDS, 0)


def test_the_real_speech_plugin_reports_what_metering_reads(tiny_models: dict[str, Path]) -> None:
    from generators.audio_speech import SpeechGenerator

    plugin = SpeechGenerator(SpeechGenerator.Config(model_id=str(tiny_models["transformers-speech"])))
    plugin.setup(CPU)
    params = SpeechGenerator.validate_params({"text": "Usage is measured.", "seed": 3})

    result = plugin.generate(params, LocalContext(CPU))
    usage = measure_usage(job(**params.model_dump()), result, 0.3)

    assert usage["audio_seconds"] > 0
    assert usage["audio_seconds"] == pytest.approx(
        result.files[0].metadata["frames"] / result.metadata["sample_rate"], abs=1e-3
    )


def test_the_real_image_plugin_reports_what_metering_reads(tiny_models: dict[str, Path]) -> None:
    from generators.image_diffusers import ImageGenerator

    plugin = ImageGenerator(ImageGenerator.Config(model_id=str(tiny_models["diffusers-image"])))
    plugin.setup(CPU)
    params = ImageGenerator.validate_params({"prompt": "a cup", "width": 64, "height": 64, "steps": 2, "num_images": 2})

    result = plugin.generate(params, LocalContext(CPU))
    usage = measure_usage(job(**params.model_dump()), result, 0.3)

    assert usage["images"] == 2
    assert usage["image_megapixel_steps"] == pytest.approx(2 * 64 * 64 * 2 / 1e6)


def test_the_real_text_plugin_reports_what_metering_reads(tiny_models: dict[str, Path]) -> None:
    from generators.text_transformers import TextGenerator

    plugin = TextGenerator(TextGenerator.Config(model_id=str(tiny_models["transformers-text"])))
    plugin.setup(CPU)
    params = TextGenerator.validate_params({"prompt": "Count the tokens", "max_new_tokens": 5, "seed": 1})

    result = plugin.generate(params, LocalContext(CPU))
    usage = measure_usage(job(**params.model_dump()), result, 0.3)

    assert usage["tokens_in"] > 0
    assert 1 <= usage["tokens_out"] <= 5
