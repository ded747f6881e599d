"""The capability map: which llama.cpp variant suits a machine, as a pure function of what detection saw.

Detection (:mod:`ggufpack.backends.detect`) fills a :class:`DeviceDescription`; everything here only
reads it, so tests can hand in any machine they like.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCELERATORS = ("cpu", "cuda", "rocm", "vulkan")
#: what each GPU accelerator's build needs beyond cmake and a C/C++ compiler
TOOLCHAIN = {"cpu": (), "cuda": ("nvcc",), "rocm": ("hipcc",), "vulkan": ("glslc",)}
#: the GGML cmake flags of each variant
GGML_FLAGS = {
    "cpu": (),
    "cuda": ("-DGGML_CUDA=ON",),
    "rocm": ("-DGGML_HIP=ON",),
    "vulkan": ("-DGGML_VULKAN=ON",),
}
VARIANT_PREFIX = "llama.cpp-"


@dataclass(frozen=True)
class DeviceDescription:
    """What detection saw. Each flag says which evidence was found (for messages), or is empty."""

    nvidia: str = ""  # e.g. "nvidia-smi", "/proc/driver/nvidia"
    amd: str = ""  # e.g. "rocminfo", "/dev/kfd"
    vulkan: str = ""  # e.g. "vulkaninfo: NVIDIA GeForce RTX 4090 (DISCRETE_GPU)"

    def summary(self) -> str:
        seen = [f"{kind} ({why})" for kind, why in (("NVIDIA", self.nvidia), ("AMD", self.amd),
                                                      ("Vulkan", self.vulkan)) if why]
        return ", ".join(seen) or "no GPU"


def preferred_accelerators(device: DeviceDescription) -> tuple[str, ...]:
    """Accelerators to use on ``device``, best first; ``cpu`` always comes last.

    A dedicated runtime (CUDA on NVIDIA, ROCm on AMD) beats Vulkan, which beats the CPU. Vulkan is
    offered on NVIDIA and AMD GPUs too, because their drivers ship a Vulkan ICD.
    """
    order: list[str] = []
    if device.nvidia:
        order.append("cuda")
    if device.amd:
        order.append("rocm")
    if device.vulkan or device.nvidia or device.amd:
        order.append("vulkan")
    order.append("cpu")
    return tuple(order)


def variant_name(accelerator: str) -> str:
    return f"{VARIANT_PREFIX}{accelerator}"


def accelerator_of(name: str) -> str | None:
    """``cuda`` for ``llama.cpp-cuda``; None for any name that is not a built variant."""
    accelerator = name.removeprefix(VARIANT_PREFIX)
    return accelerator if name.startswith(VARIANT_PREFIX) and accelerator in ACCELERATORS else None


def select_variant(device: DeviceDescription, installed: set[str] | frozenset[str]) -> str | None:
    """The installed variant name the meta name ``llama.cpp`` means on ``device``; None if none fits."""
    return next((variant_name(a) for a in preferred_accelerators(device) if variant_name(a) in installed), None)
