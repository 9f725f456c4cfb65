"""Memory probes: what a loaded model occupies, what a device has free, and giving freed memory back."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

MIB = 1024 * 1024


def module_bytes(obj: Any) -> int:
    """Bytes held by parameters and buffers of every torch module reachable from `obj` (one level deep)."""
    if "torch" not in sys.modules:
        return 0
    import torch

    modules: list[torch.nn.Module] = []
    candidates = [obj] + list(getattr(obj, "__dict__", {}).values())
    components = getattr(obj, "components", None)  # diffusers pipelines
    if isinstance(components, dict):
        candidates += list(components.values())
    for candidate in candidates:
        if isinstance(candidate, torch.nn.Module) and all(candidate is not m for m in modules):
            modules.append(candidate)
        sub = getattr(candidate, "components", None)
        if isinstance(sub, dict):
            modules += [m for m in sub.values() if isinstance(m, torch.nn.Module)]
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            # Tied weights share one storage: count it once.
            key = tensor.untyped_storage().data_ptr() if tensor.device.type != "meta" else id(tensor)
            if key not in seen:
                seen.add(key)
                total += tensor.numel() * tensor.element_size()
    return total


def process_rss_bytes() -> int | None:
    """Resident memory of this process now (Linux `/proc`), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def device_free_bytes(device: str) -> int | None:
    """Free memory of `device` ("cuda:1", "mps", "cpu") as the driver or kernel reports it; None if unknown."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        free, _total = torch.cuda.mem_get_info(index)
        return int(free)
    if device == "mps":
        import torch

        recommended = getattr(torch.mps, "recommended_max_memory", None)
        allocated = getattr(torch.mps, "driver_allocated_memory", None)
        if recommended is None or allocated is None:
            return None
        return max(int(recommended()) - int(allocated()), 0)
    return _cpu_available_bytes()


def _cpu_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _trim_heap() -> None:
    # glibc keeps freed blocks in its arenas; malloc_trim hands them back to the kernel so RSS really drops.
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def release_device_memory(device: str) -> None:
    """Return cached allocator blocks to the device (or freed heap pages to the OS) so the memory is really free."""
    if device == "cpu":
        _trim_heap()
        return
    if "torch" not in sys.modules:
        return
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        torch.mps.empty_cache()
