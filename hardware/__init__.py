"""Device detection, dtype policy, memory probes and the model cache. Imports torch lazily."""

from hardware.devices import DeviceChoice, DeviceInfo, DeviceUnavailable, detect_devices, select_device
from hardware.needs import HardwareNeeds

__all__ = [
    "DeviceChoice",
    "DeviceInfo",
    "DeviceUnavailable",
    "HardwareNeeds",
    "detect_devices",
    "select_device",
]
