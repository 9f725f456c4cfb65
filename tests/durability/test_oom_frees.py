"""An out-of-memory retry really frees the failed attempt: the first plugin instance (and its weights) is gone
before the low-memory retry runs, whatever way the error came: a real CPU allocator failure, a plugin that
wraps it in `OutOfMemory`, or a CUDA out-of-memory (simulated: this machine has no GPU)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import torch
from pydantic import BaseModel

from aigc_saas.jobs import runtime, services
from aigc_saas.jobs.models import Job
from generators.base import GenerationResult, Generator, GeneratorConfig, Modality
from generators.errors import OutOfMemory
from generators.registry import PluginInfo
from hardware import DeviceChoice
from hardware.cache import ModelCache
from hardware.oom import is_oom

pytestmark = pytest.mark.django_db

IMPOSSIBLE = 2**62  # bytes: no allocator can give this, so torch raises its own error


def allocate_impossible() -> None:
    torch.empty(IMPOSSIBLE, dtype=torch.uint8)


class HungryParams(BaseModel):
    prompt: str = ""


class Hungry(Generator):
    """Holds 4 MB of "weights"; its first, full-memory attempt runs out of memory in the way `mode` says."""

    name = "hungry"
    modality = Modality.TEXT
    Params = HungryParams
    Config = GeneratorConfig
    mode = "cpu"
    loaded: list[tuple[weakref.ref, weakref.ref]] = []  # (instance, weights) of every setup
    seen_at_retry: dict[str, Any] = {}
    activations: weakref.ref

    def setup(self, device: DeviceChoice) -> None:
        super().setup(device)
        self.weights = torch.zeros(1024 * 1024)
        Hungry.loaded.append((weakref.ref(self), weakref.ref(self.weights)))

    def generate(self, params: Any, ctx: Any) -> GenerationResult:
        if not ctx.device.low_memory:
            activations = self.weights * 2  # what a forward pass holds in its frames: teardown cannot drop it
            Hungry.activations = weakref.ref(activations)
            if Hungry.mode == "cuda":
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.78 GiB total)")
            try:
                allocate_impossible()
            except RuntimeError as exc:
                if Hungry.mode == "wrapped":
                    raise OutOfMemory(f"the model did not fit: {exc}") from exc
                raise
        gc.collect()
        first, first_weights = Hungry.loaded[0]
        Hungry.seen_at_retry = {
            "instance": first() is not None,
            "weights": first_weights() is not None,
            "activations": Hungry.activations() is not None,
        }
        return GenerationResult(text=f"ran with low_memory={ctx.device.low_memory}")


@pytest.fixture
def hungry(monkeypatch):  # noqa: ANN001, ANN201
    """Jobs resolve to `Hungry` on a fresh model cache (so eviction is the real one) and the device of the mode."""
    Hungry.loaded, Hungry.seen_at_retry = [], {}
    monkeypatch.setattr(runtime, "_cache", ModelCache({}))
    info = PluginInfo(name="hungry", cls=Hungry, distribution="tests", version="1.0", entry_point="tests:Hungry")

    def resolve(job: Job):  # noqa: ANN202
        device = "cuda:0" if Hungry.mode == "cuda" else "cpu"
        return info, GeneratorConfig(model_id="tests/hungry"), DeviceChoice(device=device, dtype="float32")

    monkeypatch.setattr(runtime, "resolve", resolve)
    return Hungry


def test_a_real_cpu_allocation_failure_is_recognised_as_out_of_memory() -> None:
    with pytest.raises(RuntimeError) as raised:
        allocate_impossible()

    print(f"torch {torch.__version__} on CPU: {str(raised.value)[:120]}")
    assert is_oom(raised.value)


@pytest.mark.parametrize("mode", ["cpu", "wrapped", "cuda"])
def test_the_failed_attempt_is_freed_before_the_low_memory_retry(tenant, hungry, mode: str) -> None:  # noqa: ANN001
    hungry.mode = mode
    job = services.submit_job(tenant, "transformers-text", {"prompt": "big"})

    assert runtime.execute_job(str(job.pk)) == "succeeded"

    job.refresh_from_db()
    assert job.result["text"] == "ran with low_memory=True"
    assert len(hungry.loaded) == 2  # the full-memory load, then the low-memory one
    print(f"{mode}: first attempt alive during the retry: {hungry.seen_at_retry}")
    assert hungry.seen_at_retry == {"instance": False, "weights": False, "activations": False}
    gc.collect()
    assert hungry.loaded[0][0]() is None
