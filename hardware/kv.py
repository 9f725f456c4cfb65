"""The KV-cache budget of a device: how much memory the serving engines of one worker may give to keys and values.

`AIGC_KV_BUDGET_MB_<KIND>` sets it (e.g. `AIGC_KV_BUDGET_MB_CUDA=20000`); the default is sized from the device:
on an accelerator 40 % of what is free once the model is loaded (weights stay, activations need the rest), on the
CPU 10 % of the machine's memory, at most 4 GiB (more rows than that only queue on a few cores).
"""

from __future__ import annotations

import os

from hardware.memory import MIB, device_free_bytes

CPU_CAP = 4 * 1024 * MIB


def kv_budget_bytes(device: str) -> int:
    kind = device.split(":", 1)[0]
    raw = os.environ.get(f"AIGC_KV_BUDGET_MB_{kind.upper()}")
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"`AIGC_KV_BUDGET_MB_{kind.upper()}` must be an integer, got {raw!r}") from None
        if value <= 0:
            raise ValueError(f"`AIGC_KV_BUDGET_MB_{kind.upper()}` must be positive, got {value}")
        return value * MIB
    if kind == "cpu":
        from hardware.devices import _cpu_info

        total = _cpu_info().total_memory or 8 * 1024 * MIB
        return min(total // 10, CPU_CAP)
    free = device_free_bytes(device)
    return int((free or 4 * 1024 * MIB) * 0.4)


def kv_budget_tokens(device: str, bytes_per_token: int) -> int:
    """The budget as token slots for a model whose one token takes `bytes_per_token` of keys and values."""
    return max(1, kv_budget_bytes(device) // max(1, bytes_per_token))
