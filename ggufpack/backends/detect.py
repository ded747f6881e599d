"""Accelerator detection: look at this machine and fill a :class:`DeviceDescription`.

Only the evidence is gathered here; the choice of variant is :func:`capability.preferred_accelerators`.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

from .capability import DeviceDescription

_VULKAN_GPU = re.compile(r"deviceType\s*=\s*PHYSICAL_DEVICE_TYPE_(DISCRETE_GPU|INTEGRATED_GPU|VIRTUAL_GPU)")
_VULKAN_NAME = re.compile(r"deviceName\s*=\s*(.+)")


def _runs(argv: list[str]) -> str | None:
    """The output of ``argv`` when it exits 0 within a few seconds, else None."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _nvidia() -> str:
    if _runs(["nvidia-smi", "-L"]):
        return "nvidia-smi"
    return "/proc/driver/nvidia" if Path("/proc/driver/nvidia").exists() else ""


def _amd() -> str:
    if _runs(["rocminfo"]):
        return "rocminfo"
    return "/dev/kfd" if Path("/dev/kfd").exists() else ""


def _vulkan() -> str:
    """A Vulkan GPU (software rasterizers such as llvmpipe report type CPU and do not count)."""
    text = _runs(["vulkaninfo", "--summary"])
    if not text or not _VULKAN_GPU.search(text):
        return ""
    name = _VULKAN_NAME.search(text)
    return f"vulkaninfo: {name.group(1).strip()}" if name else "vulkaninfo"


@functools.cache
def detect_device() -> DeviceDescription:
    """What accelerators this machine has; probed once per process (each probe may run a tool)."""
    return DeviceDescription(nvidia=_nvidia(), amd=_amd(), vulkan=_vulkan())
