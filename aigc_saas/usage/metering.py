"""What one job consumed, measured from what its generator reported; stored as `Job.usage` when it finishes.

Units (every key always present, so totals add up without special cases):
- tokens_in / tokens_out: text tokens read and written (`prompt_tokens` / `completion_tokens` in the result metadata)
- images and image_megapixel_steps: width * height * steps / 1e6 summed over the images produced, the measure
  denoising cost grows with
- audio_seconds: seconds of audio produced (`duration_seconds` of each audio file, else of the result)
- run_seconds: wall time the worker spent generating
"""

from __future__ import annotations

import math
from typing import Any

from generators.base import GenerationResult

USAGE_FIELDS = ("tokens_in", "tokens_out", "images", "image_megapixel_steps", "audio_seconds", "run_seconds")


def measure_usage(job: Any, result: GenerationResult, run_seconds: float) -> dict[str, Any]:
    """The usage of `job` that produced `result` in `run_seconds`."""
    meta = result.metadata or {}
    params = getattr(job, "params", None) or {}
    images = [f for f in result.files if f.content_type.startswith("image/")]
    audio = [f for f in result.files if f.content_type.startswith("audio/")]
    return {
        "tokens_in": _count(meta.get("prompt_tokens")),
        "tokens_out": _count(meta.get("completion_tokens")),
        "images": len(images),
        "image_megapixel_steps": round(sum(_megapixel_steps(f.metadata, meta, params) for f in images), 6),
        "audio_seconds": round(_audio_seconds(audio, meta), 4),
        "run_seconds": round(max(0.0, float(run_seconds)), 4),
    }


def empty_usage() -> dict[str, Any]:
    return dict.fromkeys(USAGE_FIELDS, 0)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return max(0.0, float(value))


def _megapixel_steps(image_meta: dict[str, Any], result_meta: dict[str, Any], params: dict[str, Any]) -> float:
    """One image's size and steps: what the file records, else the result, else the job's params."""

    def pick(name: str) -> float:
        for source in (image_meta or {}, result_meta, params):
            value = _number(source.get(name))
            if value:
                return value
        return 0.0

    return pick("width") * pick("height") * pick("steps") / 1e6


def _audio_seconds(files: list[Any], result_meta: dict[str, Any]) -> float:
    per_file = [_number((f.metadata or {}).get("duration_seconds")) for f in files]
    if any(per_file):
        return sum(per_file)
    return _number(result_meta.get("duration_seconds"))
