"""What a plugin declares about the hardware it can use."""

from __future__ import annotations

from dataclasses import dataclass

DEVICE_KINDS = ("cuda", "mps", "cpu")
DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class HardwareNeeds:
    """Devices in order of preference, the dtypes the model tolerates and the memory it wants."""

    devices: tuple[str, ...] = DEVICE_KINDS
    dtypes: tuple[str, ...] = DTYPES
    memory_mb: int = 0

    def __post_init__(self) -> None:
        unknown = [d for d in self.devices if d not in DEVICE_KINDS]
        if unknown or not self.devices:
            raise ValueError(f"`devices` must be a non-empty subset of {DEVICE_KINDS}, got {self.devices!r}")
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad or not self.dtypes:
            raise ValueError(f"`dtypes` must be a non-empty subset of {DTYPES}, got {self.dtypes!r}")
        if "cpu" in self.devices and "float32" not in self.dtypes:
            raise ValueError("a plugin that runs on `cpu` must allow `float32` in `dtypes`")
        if self.memory_mb < 0:
            raise ValueError(f"`memory_mb` must be >= 0, got {self.memory_mb!r}")

    @property
    def needs_accelerator(self) -> bool:
        return "cpu" not in self.devices
