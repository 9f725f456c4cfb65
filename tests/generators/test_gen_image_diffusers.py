"""The built-in `diffusers-image` plugin, run on a tiny real Stable Diffusion pipeline."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
from PIL import Image

from generators.base import LocalContext
from generators.errors import JobCancelled, OutOfMemory, ParamsInvalid
from generators.image_diffusers import MAX_PIXELS, ImageGenerator
from hardware import DeviceChoice

SMALL = {"prompt": "a handmade ceramic mug", "width": 64, "height": 64, "steps": 4}


def params(**overrides: object):  # noqa: ANN201
    return ImageGenerator.validate_params(SMALL | overrides)


def test_module_import_does_not_import_torch() -> None:
    code = "import generators.image_diffusers, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_model_id_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGC_MODEL_DIFFUSERS_IMAGE", "someone/some-model")
    assert ImageGenerator.default_config().model_id == "someone/some-model"


def test_generates_a_png_of_the_asked_size_with_the_record_in_text_chunks(image_plugin: ImageGenerator) -> None:
    result = image_plugin.generate(params(width=64, height=96, seed=7), LocalContext())

    [file] = result.files
    image = Image.open(io.BytesIO(file.data))
    assert (file.content_type, image.format, image.size) == ("image/png", "PNG", (64, 96))
    for key in ("model_id", "seed", "steps", "device", "dtype", "width", "height", "scheduler", "prompt"):
        assert key in image.text, key
        assert key in file.metadata, key
    assert image.text["prompt"] == "a handmade ceramic mug"
    assert image.text["seed"] == "7" and file.metadata["seed"] == 7
    assert json.loads(image.text["aigc_saas:record"])["width"] == 64
    assert file.metadata["device"] == "cpu" and file.metadata["dtype"] == "float32"


def test_non_latin_prompt_is_kept_in_an_international_text_chunk(image_plugin: ImageGenerator) -> None:
    result = image_plugin.generate(params(prompt="une tasse en céramique, 陶器のマグカップ"), LocalContext())

    assert Image.open(io.BytesIO(result.files[0].data)).text["prompt"] == "une tasse en céramique, 陶器のマグカップ"


def test_same_seed_gives_the_same_image_and_an_unset_seed_is_recorded(image_plugin: ImageGenerator) -> None:
    first = image_plugin.generate(params(seed=42), LocalContext())
    second = image_plugin.generate(params(seed=42), LocalContext())
    unseeded = image_plugin.generate(params(), LocalContext())

    assert (
        Image.open(io.BytesIO(first.files[0].data)).tobytes() == Image.open(io.BytesIO(second.files[0].data)).tobytes()
    )
    assert isinstance(unseeded.files[0].metadata["seed"], int)


def test_several_images_get_consecutive_seeds(image_plugin: ImageGenerator) -> None:
    result = image_plugin.generate(params(num_images=3, seed=10), LocalContext())

    assert [f.filename for f in result.files] == ["image-1.png", "image-2.png", "image-3.png"]
    assert [f.metadata["seed"] for f in result.files] == [10, 11, 12]


@pytest.mark.parametrize("scheduler", ["default", "euler", "euler_a", "dpm++", "ddim"])
def test_every_scheduler_runs(image_plugin: ImageGenerator, scheduler: str) -> None:
    result = image_plugin.generate(params(scheduler=scheduler, steps=2), LocalContext())

    assert result.files[0].metadata["scheduler"] == scheduler
    assert result.files[0].metadata["scheduler_class"].endswith("Scheduler")


def test_progress_is_reported_once_per_step_and_never_goes_back(image_plugin: ImageGenerator) -> None:
    ctx = LocalContext()
    image_plugin.generate(params(steps=6), ctx)

    fractions = [fraction for fraction, _ in ctx.reports]
    assert len(fractions) == 6 + 1  # each denoising step, then the encoded files
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert ctx.reports[0][1] == "step 1/6"


def test_cancellation_stops_denoising_at_the_next_step(image_plugin: ImageGenerator) -> None:
    unet_calls = []
    hook = image_plugin.pipe.unet.register_forward_hook(lambda *args: unet_calls.append(1))
    try:
        ctx = LocalContext(cancel_after=2)
        with pytest.raises(JobCancelled) as caught:
            image_plugin.generate(params(steps=8), ctx)
    finally:
        hook.remove()

    assert caught.value.code == "cancelled"
    assert len(ctx.reports) == 2
    assert len(unet_calls) == 2  # steps 3..8 never ran the UNet


def test_a_job_cancelled_before_it_starts_does_no_work(image_plugin: ImageGenerator) -> None:
    ctx = LocalContext(cancel_after=0)
    with pytest.raises(JobCancelled):
        image_plugin.generate(params(), ctx)
    assert ctx.reports == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"width": 65}, "width"),
        ({"height": 100}, "height"),
        ({"width": 32}, "width"),
        ({"width": 2056}, "width"),
        ({"steps": 0}, "steps"),
        ({"steps": 101}, "steps"),
        ({"guidance_scale": 25}, "guidance_scale"),
        ({"num_images": 5}, "num_images"),
        ({"scheduler": "plms"}, "scheduler"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"seed": -1}, "seed"),
        ({"strength": 0.5}, "strength"),
    ],
)
def test_bad_params_are_refused_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ParamsInvalid) as caught:
        params(**overrides)

    assert caught.value.code == "invalid_params"
    assert [e["field"] for e in caught.value.errors] == [field]
    assert f"`{field}`" in caught.value.message


def test_the_pixel_cap_names_width_and_height() -> None:
    with pytest.raises(ParamsInvalid) as caught:
        params(width=2048, height=1024)

    [error] = caught.value.errors
    assert error["field"] == "height"
    assert "`width` x `height`" in error["message"] and str(MAX_PIXELS) in error["message"]
    assert params(width=1024, height=1024).width == 1024  # the cap itself is allowed


def test_out_of_memory_while_denoising_becomes_out_of_memory_error(
    image_plugin: ImageGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    def exhausted(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(image_plugin.pipe), "__call__", exhausted)
    with pytest.raises(OutOfMemory) as caught:
        image_plugin.generate(params(num_images=4), LocalContext())

    assert caught.value.code == "out_of_memory"
    assert "`num_images`" in caught.value.message


def test_low_memory_mode_on_cpu_slices_attention_and_vae(tiny_image_model: Path) -> None:
    plugin = ImageGenerator(ImageGenerator.Config(model_id=str(tiny_image_model)))
    plugin.setup(DeviceChoice(device="cpu", dtype="float32", low_memory=True))

    assert plugin.pipe.vae.use_slicing is True
    result = plugin.generate(params(), LocalContext(DeviceChoice(device="cpu", dtype="float32", low_memory=True)))
    assert result.files[0].metadata["low_memory"] is True


def test_low_memory_mode_on_cuda_offloads_components_instead_of_moving_the_pipeline(
    tiny_image_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import DiffusionPipeline

    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(
        DiffusionPipeline,
        "enable_model_cpu_offload",
        lambda self, gpu_id=None, device=None: calls.append(("offload", device)),
    )
    monkeypatch.setattr(DiffusionPipeline, "to", lambda self, *a, **k: calls.append(("to", a)))
    plugin = ImageGenerator(ImageGenerator.Config(model_id=str(tiny_image_model)))
    plugin.setup(DeviceChoice(device="cuda:1", dtype="float32", low_memory=True))

    assert calls == [("offload", "cuda:1")]


def test_normal_mode_moves_the_pipeline_to_the_device(tiny_image_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import DiffusionPipeline

    calls: list[object] = []
    monkeypatch.setattr(DiffusionPipeline, "to", lambda self, *a, **k: calls.append(a))
    plugin = ImageGenerator(ImageGenerator.Config(model_id=str(tiny_image_model)))
    plugin.setup(DeviceChoice(device="cuda:1", dtype="float32"))

    assert calls == [("cuda:1",)]


def test_a_missing_model_is_a_model_load_error(tmp_path: Path) -> None:
    from generators.errors import ModelLoadFailed

    plugin = ImageGenerator(ImageGenerator.Config(model_id=str(tmp_path / "nothing-here")))
    with pytest.raises(ModelLoadFailed) as caught:
        plugin.setup(DeviceChoice(device="cpu", dtype="float32"))
    assert caught.value.code == "model_load_failed"


def test_teardown_releases_the_pipeline(tiny_image_model: Path) -> None:
    import gc

    plugin = ImageGenerator(ImageGenerator.Config(model_id=str(tiny_image_model)))
    plugin.setup(DeviceChoice(device="cpu", dtype="float32"))
    plugin.generate(params(), LocalContext())
    unet = weakref.ref(plugin.pipe.unet)

    plugin.teardown()
    gc.collect()

    assert unet() is None
