"""A per-worker cache of loaded models with a memory budget per device, evicting least recently used.

A value may say it is in use (`busy()`: an engine with jobs running or waiting). A busy entry is never evicted
under it: tearing an engine down fails every job it holds. A load that needs its room waits instead (each busy
entry in its way is marked `draining`, so a worker claims no new jobs for it and it empties), and takes the room
once they are idle."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hardware.memory import MIB, device_free_bytes, module_bytes, release_device_memory

if TYPE_CHECKING:
    from hardware.devices import DeviceInfo


class DoesNotFit(Exception):
    """A model is larger than the whole budget of its device."""

    code = "model_exceeds_budget"


class DeviceBusy(DoesNotFit):
    """A model could not be loaded within its wait: the engines it would evict stayed busy all along."""

    code = "device_busy"


@dataclass
class CacheEntry:
    key: Hashable
    value: Any
    device: str
    size_bytes: int
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    hits: int = 0
    load_seconds: float = 0.0
    draining: bool = False  # a load waits for it to go idle: take no new work for it


def busy(value: Any) -> bool:
    """Whether a cached value is in use (its `busy()` says so; a value without one never is)."""
    check = getattr(value, "busy", None)
    return bool(check()) if callable(check) else False


def default_budgets(devices: list[DeviceInfo], fraction: float = 0.8) -> dict[str, int]:
    """A budget per device: `AIGC_CACHE_BUDGET_MB_<KIND>` when set, else `fraction` of its total memory."""
    if not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction!r}")
    budgets: dict[str, int] = {}
    for info in devices:
        raw = os.environ.get(f"AIGC_CACHE_BUDGET_MB_{info.kind.upper()}")
        if raw:
            try:
                budgets[info.id] = int(raw) * MIB
            except ValueError:
                raise ValueError(f"`AIGC_CACHE_BUDGET_MB_{info.kind.upper()}` must be an integer, got {raw!r}")
        elif info.total_memory:
            budgets[info.id] = int(info.total_memory * fraction)
    return budgets


class ModelCache:
    """Keeps loaded models between jobs; `budgets` maps a device id or kind to bytes (absent: no limit).

    Sizes are measured after loading (by default the bytes of the torch modules the value holds), so a
    low `estimate_bytes` cannot push a device over its budget for longer than one load.
    """

    DRAIN_POLL_SECONDS = 0.2  # how often a load that waits for busy entries looks again

    def __init__(self, budgets: dict[str, int] | None = None) -> None:
        self.budgets = dict(budgets or {})
        self._entries: OrderedDict[Hashable, CacheEntry] = OrderedDict()
        self._lock = threading.RLock()
        self.evictions = 0

    def budget_for(self, device: str) -> int | None:
        return self.budgets.get(device, self.budgets.get(device.split(":", 1)[0]))

    def used(self, device: str) -> int:
        with self._lock:
            return sum(e.size_bytes for e in self._entries.values() if e.device == device)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry.last_used = time.time()
            entry.hits += 1
            self._entries.move_to_end(key)
            return entry.value

    def get_or_load(
        self,
        key: Hashable,
        loader: Callable[[], Any],
        *,
        device: str,
        estimate_bytes: int = 0,
        measure: Callable[[Any], int] | None = None,
        wait_seconds: float = 0.0,
    ) -> Any:
        """Return the cached value or load it, first evicting idle LRU entries of `device` so it fits.

        Where busy entries stand in the way, it waits up to `wait_seconds` for them to go idle (they drain
        meanwhile), then raises `DeviceBusy`. Without `measure`, the size is the bytes of the torch modules the
        value holds, or `estimate_bytes` when it holds none. A value measured larger than the whole budget is
        dropped and `DoesNotFit` raised.
        """
        deadline = time.monotonic() + wait_seconds
        marked: set[Hashable] = set()
        try:
            while True:
                with self._lock:
                    cached = self.get(key)
                    if cached is not None:
                        return cached
                    blocking = self.make_room(device, estimate_bytes)
                    if not blocking:
                        return self._load(key, loader, device, estimate_bytes, measure)
                    for other in blocking:
                        self._entries[other].draining = True
                    marked.update(blocking)
                if time.monotonic() >= deadline:
                    raise DeviceBusy(
                        f"`{key}` needs {estimate_bytes} bytes of `{device}`, held by models busy with jobs for "
                        f"{wait_seconds:.0f} s"
                    )
                time.sleep(self.DRAIN_POLL_SECONDS)
        finally:
            with self._lock:
                for other in marked:  # those still here (a wait that gave up, or went idle) serve on
                    if other in self._entries:
                        self._entries[other].draining = False

    def draining(self, key: Hashable) -> bool:
        """Whether a load waits for this entry to go idle (a worker claims no new jobs for it meanwhile). Read
        without the lock, as `in` is: a load holds it for as long as a model takes to load, and claims ask this."""
        entry = self._entries.get(key)
        return entry is not None and entry.draining

    def _load(
        self,
        key: Hashable,
        loader: Callable[[], Any],
        device: str,
        estimate_bytes: int,
        measure: Callable[[Any], int] | None,
    ) -> Any:
        with self._lock:
            started = time.perf_counter()
            value = loader()
            elapsed = time.perf_counter() - started
            size = measure(value) if measure else (module_bytes(value) or estimate_bytes)
            self._entries[key] = CacheEntry(
                key=key, value=value, device=device, size_bytes=max(size, 0), load_seconds=elapsed
            )
            del value
            budget = self.budget_for(device)
            if budget is not None and size > budget:
                self.evict(key)
                raise DoesNotFit(
                    f"`{key}` measured {size} bytes after loading, over the {budget}-byte budget of `{device}`"
                )
            # The estimate may have been low: settle the budget with the measured size (idle entries only: a
            # busy one stays, over budget, until a later load finds it idle).
            self.make_room(device, 0, keep=key)
            return self._entries[key].value

    def make_room(self, device: str, needed: int, keep: Hashable | None = None) -> list[Hashable]:
        """Evict least recently used idle entries of `device` until `needed` more bytes fit its budget. Returns
        the busy entries that would have to go too (empty: it fits now)."""
        budget = self.budget_for(device)
        if budget is None:
            return []
        if needed > budget:
            raise DoesNotFit(f"a model needing {needed} bytes exceeds the {budget}-byte budget of `{device}`")
        with self._lock:
            in_use: list[Hashable] = []
            for key in [k for k, e in self._entries.items() if e.device == device and k != keep]:
                if self.used(device) + needed <= budget:
                    return []
                if busy(self._entries[key].value):
                    in_use.append(key)
                else:
                    self.evict(key)
            short = self.used(device) + needed - budget
            blocking: list[Hashable] = []
            for key in in_use:  # least recently used first, as many as the room needs
                if short <= 0:
                    break
                blocking.append(key)
                short -= self._entries[key].size_bytes
            return blocking

    def evict(self, key: Hashable) -> bool:
        """Drop one entry, call its `teardown()`, and give the freed memory back to its device."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            device = entry.device
            teardown = getattr(entry.value, "teardown", None)
            if callable(teardown):
                teardown()
            # Drop every local reference before collecting, or the model outlives its eviction.
            del teardown, entry
            gc.collect()
            release_device_memory(device)
            self.evictions += 1
            return True

    def clear(self, device: str | None = None) -> int:
        """Evict every idle entry (of `device` only, when given); returns how many were evicted."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if (device is None or e.device == device) and not busy(e.value)]
            for key in keys:
                self.evict(key)
            return len(keys)

    def snapshot(self) -> dict[str, Any]:
        """Budget, occupancy, free memory and loaded models per device, for reports."""
        with self._lock:
            devices = sorted({e.device for e in self._entries.values()} | set(self.budgets))
            return {
                "devices": {
                    d: {
                        "budget_bytes": self.budget_for(d),
                        "used_bytes": self.used(d),
                        "free_bytes": _free_or_none(d),
                        "entries": sum(1 for e in self._entries.values() if e.device == d),
                    }
                    for d in devices
                },
                "entries": [
                    {
                        "key": str(e.key),
                        "device": e.device,
                        "size_bytes": e.size_bytes,
                        "loaded_at": e.loaded_at,
                        "last_used": e.last_used,
                        "hits": e.hits,
                        "load_seconds": round(e.load_seconds, 3),
                    }
                    for e in self._entries.values()
                ],
                "evictions": self.evictions,
            }

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def _free_or_none(device: str) -> int | None:
    if device in ("cuda", "mps"):  # a kind-wide budget, not one device
        return None
    if device != "cpu" and "torch" not in sys.modules:  # a snapshot never imports torch by itself
        return None
    try:
        return device_free_bytes(device)
    except (RuntimeError, ValueError):
        return None
