"""Hardware presets (data files with their sources) and ceilings measured on this machine."""

from diffprobe.hardware.presets import HardwarePreset, get_preset, list_presets

__all__ = ["HardwarePreset", "get_preset", "list_presets"]
