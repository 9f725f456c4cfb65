"""Out-of-memory handling: recognise it, retry once in low-memory mode, or choose that mode up front."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from hardware.devices import DeviceChoice
from hardware.memory import MIB, device_free_bytes, release_device_memory
from hardware.needs import HardwareNeeds

if TYPE_CHECKING:
    from hardware.cache import ModelCache

T = TypeVar("T")
log = logging.getLogger(__name__)

OOM_MESSAGES = (
    "out of memory",  # CUDA ("CUDA out of memory", "CUDA error: out of memory") and MPS
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "can't allocate memory",  # torch's CPU allocator
    "failed to allocate memory",
)


class DeviceOutOfMemory(Exception):
    """A device ran out of memory, even after the cache was cleared and low-memory mode was tried."""

    code = "out_of_memory"

    def __init__(self, message: str, *, device: str, low_memory: bool) -> None:
        super().__init__(message)
        self.message = message
        self.device = device
        self.low_memory = low_memory


def is_oom(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError, allocator RuntimeErrors, MemoryError, or any error coded `out_of_memory`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # also look through `raise ... from oom`
        seen.add(id(current))
        if _is_oom_one(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_oom_one(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or getattr(exc, "code", None) == "out_of_memory":
        return True
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MESSAGES)


@contextmanager
def oom_as_device_error(choice: DeviceChoice) -> Iterator[None]:
    """Turn any out-of-memory error raised inside the block into `DeviceOutOfMemory` for `choice`."""
    try:
        yield
    except DeviceOutOfMemory:
        raise
    except Exception as exc:
        if not is_oom(exc):
            raise
        raise DeviceOutOfMemory(
            f"`{choice.device}` ran out of memory{' in low-memory mode' if choice.low_memory else ''}: {exc}",
            device=choice.device,
            low_memory=choice.low_memory,
        ) from exc


def run_with_oom_retry(
    run: Callable[[DeviceChoice], T],
    choice: DeviceChoice,
    *,
    cache: ModelCache | None = None,
    on_retry: Callable[[DeviceChoice, BaseException], None] | None = None,
) -> T:
    """Call `run(choice)`; on out-of-memory free the device (evicting `cache`) and retry once with low_memory=True.

    `run` must load (or fetch from the cache under a key that includes `low_memory`) and generate, so the retry
    really runs the low-memory setup. A second out-of-memory, or one already in low-memory mode, raises
    `DeviceOutOfMemory`; every other error passes through untouched.
    """
    try:
        return run(choice)
    except Exception as exc:
        if not is_oom(exc):
            raise
        first = exc
    free_device(choice.device, cache)
    if choice.low_memory:
        raise DeviceOutOfMemory(
            f"`{choice.device}` ran out of memory in low-memory mode: {first}", device=choice.device, low_memory=True
        ) from first
    retry = replace(choice, low_memory=True)
    log.warning("out of memory on %s; retrying once in low-memory mode: %s", choice.device, first)
    if on_retry is not None:
        on_retry(retry, first)
    with oom_as_device_error(retry):
        try:
            return run(retry)
        finally:
            del first


def free_device(device: str, cache: ModelCache | None = None) -> int:
    """Evict every cached model of `device` and return freed blocks to it; returns how many models were evicted."""
    evicted = cache.clear(device) if cache is not None else 0
    release_device_memory(device)
    return evicted


def plan_memory_mode(
    choice: DeviceChoice,
    needs: HardwareNeeds,
    *,
    free_bytes: int | None = None,
    cache: ModelCache | None = None,
) -> DeviceChoice:
    """`choice` with low_memory=True when the plugin's `memory_mb` exceeds what its accelerator can free.

    What the device can free is its free memory plus what `cache` holds there (evictable before loading).
    CPU and unknown free memory keep `choice` as it is: low-memory mode only helps on accelerators.
    """
    if choice.low_memory or choice.kind == "cpu" or not needs.memory_mb:
        return choice
    free = free_bytes if free_bytes is not None else device_free_bytes(choice.device)
    if free is None:
        return choice
    reclaimable = cache.used(choice.device) if cache is not None else 0
    if needs.memory_mb * MIB <= free + reclaimable:
        return choice
    log.info(
        "%s has %d MiB free (+%d MiB evictable), plugin wants %d MiB: using low-memory mode",
        choice.device,
        free // MIB,
        reclaimable // MIB,
        needs.memory_mb,
    )
    return replace(choice, low_memory=True)
