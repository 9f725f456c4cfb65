"""Human-readable lines about devices, budgets and loaded models, for the command and the admin."""

from __future__ import annotations

from typing import Any

MIB = 1024 * 1024


def mib(value: int | None) -> str:
    return "?" if value is None else f"{value / MIB:,.0f} MiB"


def device_lines(devices: list[dict[str, Any]]) -> list[str]:
    return [
        f"{d['id']:8} {d['name'][:32]:32} total {mib(d.get('total_memory')):>12}  free {mib(d.get('free_memory')):>12}"
        + ("  bf16" if d.get("supports_bf16") and d["kind"] == "cuda" else "")
        for d in devices
    ]


def cache_lines(cache: dict[str, Any]) -> list[str]:
    lines = []
    for device, usage in (cache.get("devices") or {}).items():
        lines.append(f"{device:8} cache {mib(usage.get('used_bytes'))} used of {mib(usage.get('budget_bytes'))} budget")
    for entry in cache.get("entries") or []:
        lines.append(
            f"  loaded on {entry['device']}: {entry['key'][:100]}  ({mib(entry['size_bytes'])}, "
            f"{entry.get('hits', 0)} reuse(s))"
        )
    return lines or ["no models loaded"]
