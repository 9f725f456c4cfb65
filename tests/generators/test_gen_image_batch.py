"""Batched text-to-image: compatible jobs share one pipeline call, and each job's seed, progress, cancellation and
record stay its own (generators/image_batch.py)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from generators import image_batch
from generators.base import BatchItem, GenerationResult, LocalContext
from generators.engine.loop import PassEngine
from generators.engine.sequence import Output, Sequence
from generators.errors import JobCancelled
from generators.image_diffusers import ImageGenerator
from hardware import DeviceChoice

# 256 px: at this size a batched VAE decode changes PNG bytes on the CPU (image_batch's docstring), so the
# identity test below fails if the plugin stops decoding one image at a time.
BASE = {"prompt": "a handmade ceramic mug", "width": 256, "height": 256, "steps": 3, "seed": 42}
CPU = DeviceChoice(device="cpu", dtype="float32")


def params(**overrides: object):  # noqa: ANN201
    return ImageGenerator.validate_params(BASE | overrides)


@contextmanager
def unet_batches(plugin: ImageGenerator) -> Iterator[list[int]]:
    """The batch size of every UNet forward while the block runs."""
    sizes: list[int] = []
    hook = plugin.pipe.unet.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    try:
        yield sizes
    finally:
        hook.remove()


def pixels(result: GenerationResult) -> list[bytes]:
    return [f.data for f in result.files]


def decoded(result: GenerationResult) -> list[bytes]:
    from PIL import Image

    return [Image.open(io.BytesIO(f.data)).tobytes() for f in result.files]


def test_a_seeded_job_gives_the_same_png_alone_and_inside_a_batch_of_four(image_plugin: ImageGenerator) -> None:
    alone = image_plugin.generate(params(), LocalContext())
    companions = [params(prompt="a red fox in snow", seed=1), params(prompt="green tea", seed=None)]
    batch = [companions[0], params(), companions[1], params(prompt="a lighthouse", seed=9)]

    with unet_batches(image_plugin) as sizes:
        results = image_plugin.generate_batch([BatchItem(p, LocalContext()) for p in batch])

    assert sizes == [8] * 3  # one pipeline call: 4 jobs x 2 (classifier-free guidance) rows, one forward per step
    assert all(isinstance(r, GenerationResult) for r in results)
    assert pixels(results[1]) == pixels(alone)  # the PNG bytes, record chunks included
    assert results[1].metadata == alone.metadata  # nothing of the batch in what the tenant sees
    assert results[1].files[0].metadata == alone.files[0].metadata
    assert len({r.files[0].data for r in results}) == 4  # and the others are their own images


def test_each_job_keeps_its_own_number_of_images_and_seeds(image_plugin: ImageGenerator) -> None:
    two = params(width=64, height=64, num_images=2, seed=100)
    alone = image_plugin.generate(two, LocalContext())

    results = image_plugin.generate_batch(
        [BatchItem(params(width=64, height=64, seed=5), LocalContext()), BatchItem(two, LocalContext())]
    )

    assert [f.metadata["seed"] for f in results[1].files] == [100, 101]
    assert pixels(results[1]) == pixels(alone)
    assert len(results[0].files) == 1


def test_unseeded_jobs_get_their_own_recorded_seeds_that_reproduce_alone(image_plugin: ImageGenerator) -> None:
    small = {"width": 64, "height": 64, "seed": None}
    results = image_plugin.generate_batch([BatchItem(params(**small), LocalContext()) for _ in range(3)])

    seeds = [r.metadata["seed"] for r in results]
    assert len(set(seeds)) == 3  # no shared random stream: three different draws
    again = image_plugin.generate(params(**small | {"seed": seeds[2]}), LocalContext())
    assert pixels(again) == pixels(results[2])


@pytest.mark.parametrize(
    ("scheduler", "unet_rows"),
    [
        ("default", [6, 6, 4, 4, 4, 4]),  # Euler: the cancelled job's rows leave after its step 2
        ("euler_a", [6, 6, 4, 4, 4, 4]),  # ancestral: each remaining row keeps drawing from its own generator
        ("dpm++", [6] * 6),  # multistep state spans the whole batch: its rows ride along, unencoded
    ],
)
def test_one_job_cancelled_mid_pass_ends_cancelled_while_the_others_finish(
    image_plugin: ImageGenerator, scheduler: str, unet_rows: list[int]
) -> None:
    contexts = [LocalContext(), LocalContext(cancel_after=2), LocalContext()]
    jobs = [params(steps=6, scheduler=scheduler, seed=seed, width=128, height=128) for seed in (11, 12, 13)]
    alone = [image_plugin.generate(jobs[i], LocalContext()) for i in (0, 2)]

    with unet_batches(image_plugin) as sizes:
        results = image_plugin.generate_batch([BatchItem(p, ctx) for p, ctx in zip(jobs, contexts, strict=True)])

    assert isinstance(results[1], JobCancelled) and results[1].code == "cancelled"
    assert len(contexts[1].reports) == 2  # it stopped reporting when cancelled
    assert sizes == unet_rows
    for batched, lone in zip([results[0], results[2]], alone, strict=True):
        assert batched.files[0].metadata == lone.files[0].metadata
        assert decoded(batched) == decoded(lone)  # the pixels; then the whole PNG
        assert pixels(batched) == pixels(lone)
    assert [round(f, 3) for f, _ in contexts[0].reports][-2:] == [0.95, 1.0]


def test_a_call_whose_jobs_are_all_cancelled_stops_at_the_next_step(image_plugin: ImageGenerator) -> None:
    contexts = [LocalContext(cancel_after=1), LocalContext(cancel_after=1)]
    with unet_batches(image_plugin) as sizes:
        results = image_plugin.generate_batch([BatchItem(params(steps=8, width=64, height=64), c) for c in contexts])

    assert all(isinstance(r, JobCancelled) for r in results)
    assert sizes == [4]  # steps 2..8 never ran


def test_a_pass_over_the_pixel_budget_is_split_into_calls(
    image_plugin: ImageGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_batch, "BATCH_PIXELS", 2 * 64 * 64)
    small = [params(width=64, height=64, steps=2, seed=s) for s in range(4)]

    with unet_batches(image_plugin) as sizes:
        results = image_plugin.generate_batch([BatchItem(p, LocalContext()) for p in small])

    assert sizes == [4, 4, 4, 4]  # two calls of two jobs, two steps each
    assert [r.metadata["seed"] for r in results] == [0, 1, 2, 3]


def test_a_batch_that_runs_out_of_memory_runs_its_jobs_alone(image_plugin: ImageGenerator) -> None:
    def refuse_big_batches(module: object, args: tuple) -> None:
        if args[0].shape[0] > 2:
            raise MemoryError("can't allocate memory")

    hook = image_plugin.pipe.unet.register_forward_pre_hook(refuse_big_batches)
    try:
        results = image_plugin.generate_batch(
            [BatchItem(params(width=64, height=64, seed=s), LocalContext()) for s in (1, 2)]
        )
    finally:
        hook.remove()

    assert [type(r) for r in results] == [GenerationResult, GenerationResult]
    assert pixels(results[1]) == pixels(image_plugin.generate(params(width=64, height=64, seed=2), LocalContext()))


def test_only_compatible_text_to_image_jobs_share_a_key(image_plugin: ImageGenerator) -> None:
    key = image_plugin.batch_key

    assert key(params()) == key(params(prompt="other", seed=3, num_images=2))
    assert key(params(negative_prompt="blur")) == key(params(negative_prompt="dark"))
    for different in ({"width": 128}, {"steps": 4}, {"scheduler": "euler_a"}, {"guidance_scale": 5.0}):
        assert key(params(**different)) != key(params()), different
    assert key(params(negative_prompt="blur")) != key(params())  # all or none give one (SDXL treats None apart)
    assert key(params(guidance_scale=1.0)) is None  # alone its UNet batch is one: not exact on the CPU
    assert key(params(guidance_scale=1.0, num_images=2)) is not None
    hash(key(params()))
    low = ImageGenerator(ImageGenerator.Config(model_id="unused"))
    low.device = DeviceChoice(device="cpu", dtype="float32", low_memory=True)
    assert low.batch_key(params()) is None
    assert ImageGenerator.max_batch_size == 4


def test_edits_and_upscaling_never_batch(image_plugin: ImageGenerator) -> None:
    from PIL import Image

    from generators.assets import with_inputs

    asset = "5f0c7d0e-8a4b-4d3c-9a7e-2b1c3d4e5f60"
    picture = Image.new("RGB", (64, 64), "white")
    for inputs in ({"init_image": picture}, {"image": picture, "mask": picture.convert("L")}):
        edit = with_inputs(ImageGenerator.validate_params({"prompt": "a mug"} | dict.fromkeys(inputs, asset)), inputs)
        assert image_plugin.batch_key(edit) is None, edit.mode
    upscale = ImageGenerator.validate_params({"prompt": "a mug", "image": asset, "upscale": 2})
    assert upscale.mode == "upscaling" and image_plugin.batch_key(upscale) is None


def test_the_pass_engine_runs_four_queued_jobs_in_one_pass_and_cancels_one(image_plugin: ImageGenerator) -> None:
    """Through the worker's PassEngine: jobs queued behind a running pass form the next pass together."""
    events: list[Output] = []
    first_progress = threading.Event()

    def emit(outputs: list[Output]) -> None:
        events.extend(outputs)
        for out in outputs:
            if out.progress is not None and out.seq.id == "b":
                out.seq.cancel()  # cancelled after its first progress report, mid-pass
            if out.progress is not None and out.seq.id == "blocker":
                first_progress.set()

    engine = PassEngine(image_plugin, emit=emit, name="test-images")
    try:
        blocker = engine.submit(Sequence(id="blocker", params=params(steps=4), tenant="t0"))
        assert first_progress.wait(30)
        seqs = [
            engine.submit(Sequence(id=name, params=params(steps=4, seed=seed), tenant=f"t{seed}"))
            for name, seed in (("a", 1), ("b", 2), ("c", 3), ("d", 4))
        ]
        outcomes = [s.future.result(timeout=120) for s in [blocker, *seqs]]
    finally:
        engine.stop()

    assert engine.steps_total == 2  # the blocker alone, then the four together
    assert isinstance(outcomes[2], JobCancelled)
    assert all(isinstance(o, GenerationResult) for i, o in enumerate(outcomes) if i != 2)
    alone = image_plugin.generate(params(steps=4, seed=3), LocalContext())
    assert pixels(outcomes[3]) == pixels(alone)
    assert [out.progress[0] for out in events if out.seq.id == "b" and out.progress] == [0.95 / 4]
