"""A per-worker cache of loaded models with a memory budget per device, evicting least recently used."""

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
    ) -> Any:
        """Return the cached value or load it, first evicting LRU entries of `device` so it fits.

        Without `measure`, the size is the bytes of the torch modules the value holds, or `estimate_bytes`
        when it holds none. A value measured larger than the whole budget is dropped and `DoesNotFit` raised.
        """
        with self._lock:
            cached = self.get(key)
            if cached is not None:
                return cached
            self.make_room(device, estimate_bytes)
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
            # The estimate may have been low: settle the budget with the measured size.
            self.make_room(device, 0, keep=key)
            return self._entries[key].value

    def make_room(self, device: str, needed: int, keep: Hashable | None = None) -> None:
        """Evict least recently used entries of `device` until `needed` more bytes fit its budget."""
        budget = self.budget_for(device)
        if budget is None:
            return
        if needed > budget:
            raise DoesNotFit(f"a model needing {needed} bytes exceeds the {budget}-byte budget of `{device}`")
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.device == device and k != keep]:
                if self.used(device) + needed <= budget:
                    break
                self.evict(key)

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
        """Evict every entry (of `device` only, when given); returns how many were evicted."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if device is None or e.device == device]
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
