"""Detect CUDA, MPS and CPU, and choose a device and dtype for a plugin's needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hardware.needs import DTYPES, HardwareNeeds


class DeviceUnavailable(Exception):
    """No device on this worker satisfies a plugin's needs (or the operator's forced choice)."""

    code = "device_unavailable"


@dataclass(frozen=True)
class DeviceInfo:
    id: str  # "cuda:0", "mps", "cpu"
    kind: str  # "cuda", "mps", "cpu"
    name: str
    total_memory: int | None = None  # bytes
    free_memory: int | None = None  # bytes
    supports_bf16: bool = False


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # a torch device string: "cuda:1", "mps", "cpu"
    dtype: str  # "float32", "float16", "bfloat16"
    low_memory: bool = False

    @property
    def kind(self) -> str:
        return self.device.split(":", 1)[0]

    def torch_dtype(self):  # noqa: ANN201 - torch is imported lazily
        import torch

        return getattr(torch, self.dtype)


def _cpu_info() -> DeviceInfo:
    total = free = None
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        total = pages * page_size
        free = os.sysconf("SC_AVPHYS_PAGES") * page_size
    except (ValueError, OSError, AttributeError):
        pass
    return DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=total, free_memory=free, supports_bf16=True)


def detect_devices() -> list[DeviceInfo]:
    """Every device torch can use here, accelerators first; CPU is always present."""
    try:
        import torch
    except ImportError:
        return [_cpu_info()]
    found: list[DeviceInfo] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            found.append(
                DeviceInfo(
                    id=f"cuda:{index}",
                    kind="cuda",
                    name=props.name,
                    total_memory=total,
                    free_memory=free,
                    supports_bf16=props.major >= 8,
                )
            )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        total = getattr(torch.mps, "recommended_max_memory", lambda: None)()
        found.append(DeviceInfo(id="mps", kind="mps", name="Apple MPS", total_memory=total, supports_bf16=False))
    found.append(_cpu_info())
    return found


def choose_dtype(info: DeviceInfo, needs: HardwareNeeds, forced: str | None = None) -> str:
    """fp16/bf16 on CUDA where the model allows, fp16 on MPS, fp32 on CPU; `forced` wins if allowed."""
    if forced:
        if forced not in DTYPES or forced not in needs.dtypes:
            raise DeviceUnavailable(f"dtype `{forced}` is not one this plugin allows: {list(needs.dtypes)}")
        return forced
    if info.kind == "cuda":
        order = ("bfloat16", "float16", "float32") if info.supports_bf16 else ("float16", "float32")
    elif info.kind == "mps":
        order = ("float16", "float32")
    else:
        order = ("float32",)
    for dtype in order:
        if dtype in needs.dtypes:
            return dtype
    raise DeviceUnavailable(f"no dtype this plugin allows ({list(needs.dtypes)}) works on `{info.id}`")


def select_device(
    needs: HardwareNeeds,
    *,
    forced_device: str | None = None,
    forced_dtype: str | None = None,
    devices: list[DeviceInfo] | None = None,
) -> DeviceChoice:
    """Pick the plugin's most preferred device present here; an operator may force one (`cuda:1`, `cpu`)."""
    available = devices if devices is not None else detect_devices()
    forced_device = forced_device or os.environ.get("AIGC_DEVICE") or None
    forced_dtype = forced_dtype or os.environ.get("AIGC_DTYPE") or None
    if forced_device:
        wanted = "cuda:0" if forced_device == "cuda" else forced_device
        match = next((d for d in available if d.id == wanted), None)
        if match is None:
            raise DeviceUnavailable(
                f"forced device `{forced_device}` is not present on this worker; found {[d.id for d in available]}"
            )
        if match.kind not in needs.devices:
            raise DeviceUnavailable(
                f"forced device `{forced_device}` is not one this plugin can use: {list(needs.devices)}"
            )
        return DeviceChoice(device=match.id, dtype=choose_dtype(match, needs, forced_dtype))
    for kind in needs.devices:
        candidates = [d for d in available if d.kind == kind]
        if candidates:
            best = max(candidates, key=lambda d: d.free_memory or 0)
            return DeviceChoice(device=best.id, dtype=choose_dtype(best, needs, forced_dtype))
    raise DeviceUnavailable(
        f"none of the devices this plugin can use ({list(needs.devices)}) is present on this worker"
    )
