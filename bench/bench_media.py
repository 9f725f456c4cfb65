"""Latency of the built-in image and speech plugins on the tiny models: cold vs warm, image steps scaling, and
4 compatible image jobs one by one vs one batched pass (`generate_batch`, as the worker's PassEngine runs them).

Run: `python bench/bench_media.py` (CPU unless AIGC_DEVICE says otherwise). Prints plain tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # keep the tables readable

from generators.audio_speech import SpeechGenerator  # noqa: E402
from generators.base import BatchItem, Generator, LocalContext  # noqa: E402
from generators.image_diffusers import ImageGenerator  # noqa: E402
from generators.testing.tiny_models import build_tiny_image_model, build_tiny_speech_model  # noqa: E402
from hardware import select_device  # noqa: E402


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_of(repeats: int, fn: Callable[[], Any]) -> float:
    return statistics.median(timed(fn) for _ in range(repeats))


def cold_and_warm(
    cls: type[Generator], model: Path, raw_params: dict[str, Any], repeats: int
) -> tuple[float, float, float]:
    """First cold run (pays lazy imports), then the median cold (fresh plugin: setup + first job) and warm job."""
    device = select_device(cls.needs)
    params = cls.validate_params(raw_params)
    colds = []
    for _ in range(repeats + 1):
        plugin = cls(cls.Config(model_id=str(model)))
        colds.append(timed(lambda p=plugin: (p.setup(device), p.generate(params, LocalContext(device)))))
    warm = median_of(repeats * 2, lambda: plugin.generate(params, LocalContext(device)))
    return colds[0], statistics.median(colds[1:]), warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is printed")
    parser.add_argument("--size", type=int, default=64, help="image width and height for the steps table")
    args = parser.parse_args()
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()

    work = Path(tempfile.mkdtemp(prefix="bench-media-"))
    started = time.perf_counter()
    image_model = build_tiny_image_model(work / "image")
    speech_model = build_tiny_speech_model(work / "speech")
    print(f"tiny models built in {time.perf_counter() - started:.2f} s (includes importing torch/diffusers)")
    device = select_device(ImageGenerator.needs)
    print(f"device: {device.device} ({device.dtype}); median of {args.repeats} runs\n")

    image_params = {"prompt": "a handmade ceramic mug", "width": 64, "height": 64, "steps": 4, "seed": 1}
    speech_params = {"text": "Our spring sale starts today.", "seed": 1}
    rows = [
        ("diffusers-image 64x64, 4 steps", *cold_and_warm(ImageGenerator, image_model, image_params, args.repeats)),
        ("transformers-speech, 29 chars", *cold_and_warm(SpeechGenerator, speech_model, speech_params, args.repeats)),
    ]
    print(f"{'plugin':34} {'1st cold (ms)':>13} {'cold (ms)':>10} {'warm (ms)':>10} {'cold/warm':>10}")
    for name, first, cold, warm in rows:
        print(f"{name:34} {first * 1000:13.1f} {cold * 1000:10.1f} {warm * 1000:10.1f} {cold / warm:10.1f}x")

    plugin = ImageGenerator(ImageGenerator.Config(model_id=str(image_model)))
    plugin.setup(device)
    size = {"width": args.size, "height": args.size}
    plugin.generate(ImageGenerator.validate_params(image_params | size), LocalContext(device))  # warm-up
    print(f"\nimage steps scaling ({args.size}x{args.size}, euler, guidance 7.5)")
    print(f"{'steps':>5} {'total (ms)':>11} {'per step (ms)':>14}")
    for steps in (1, 2, 4, 8, 16):
        params = ImageGenerator.validate_params(image_params | size | {"steps": steps})
        total = median_of(args.repeats, lambda p=params: plugin.generate(p, LocalContext(device)))
        print(f"{steps:5d} {total * 1000:11.1f} {total * 1000 / steps:14.1f}")

    batching(plugin, image_params, args.repeats)


def batching(plugin: ImageGenerator, image_params: dict[str, Any], repeats: int) -> None:
    """Four compatible text-to-image jobs (other prompts and seeds) one by one vs one batched pass, same run.

    The two are interleaved run by run and both wall and CPU time are printed: on a shared machine the wall
    time of one run swings with the neighbours' load, the process CPU time much less.
    """
    device = plugin.device
    size = ImageGenerator.max_batch_size
    prompts = ["a handmade ceramic mug", "a red fox in snow", "green tea in a glass", "a lighthouse at dusk"]
    print(
        f"\n{size} compatible image jobs (4 steps, guidance 7.5): one by one vs one batched pass, median of {repeats}"
    )
    print(f"{'size':>9} {'one by one':>20} {'batched':>20} {'speed-up':>16} {'seeded PNG same':>16}")
    print(f"{'':>9} {'wall / cpu (ms)':>20} {'wall / cpu (ms)':>20} {'wall / cpu':>16}")
    for side in (64, 256, 512):
        jobs = [
            ImageGenerator.validate_params(image_params | {"prompt": p, "seed": i, "width": side, "height": side})
            for i, p in enumerate(prompts[:size])
        ]

        def one_by_one(js: list = jobs) -> list:
            return [plugin.generate(j, LocalContext(device)) for j in js]

        def batched(js: list = jobs) -> list:
            return plugin.generate_batch([BatchItem(j, LocalContext(device)) for j in js])

        batched()  # warm-up at this size
        runs: dict[str, list[tuple[float, float]]] = {"alone": [], "batched": []}
        for _ in range(repeats):
            for name, fn in (("alone", one_by_one), ("batched", batched)):
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                runs[name].append((time.perf_counter() - wall, time.process_time() - cpu))
        (a_wall, a_cpu), (b_wall, b_cpu) = (
            (statistics.median(w for w, _ in runs[n]), statistics.median(c for _, c in runs[n])) for n in runs
        )
        same = one_by_one()[1].files[0].data == batched()[1].files[0].data
        print(
            f"{side:>4}x{side:<4} {a_wall * 1000:9.0f} / {a_cpu * 1000:8.0f} {b_wall * 1000:9.0f} / {b_cpu * 1000:8.0f}"
            f" {a_wall / b_wall:7.2f}x / {a_cpu / b_cpu:5.2f}x {str(same):>16}"
        )


if __name__ == "__main__":
    main()
