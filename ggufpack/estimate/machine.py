"""What ``ggufpack run`` would do here, as the defaults of an estimate: the runtime it picks for the
image, and the GPUs that runtime can put layers on.

- the runtime: :func:`ggufpack.run.runtimes.choose_runtime`, fed with what llama-cpp-python's server
  cannot honour in the CMD and the settings given (:func:`ggufpack.options.default_runtime.cannot_honour`);
  when nothing installed could serve the image, llama-server's figures;
- the GPUs: none for a CPU build of llama.cpp (llama-cpp-python's own libraries, or the llama-server
  backend that would run: the installed one, else the variant ``ggufpack backends install llama.cpp``
  would build for this machine's accelerator); one per NVIDIA GPU that ``nvidia-smi -L`` lists for a
  CUDA build; one otherwise.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from ggufpack.errors import GGUFPackError

RUNTIMES = ("auto", "llama-cpp-python", "llama-server")

#: Options fields that are llama-server options, with the spelling of each (for the runtime's check)
_SPELLINGS = {"ctx_size": "-c", "batch_size": "-b", "ubatch_size": "-ub", "parallel": "-np", "cache_type_k": "-ctk",
              "cache_type_v": "-ctv", "flash_attn": "-fa", "embedding": "--embedding", "swa_full": "--swa-full",
              "pooling": "--pooling"}


def _as_arguments(given: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in given.items():
        spelling = _SPELLINGS.get(name)
        if spelling is None or value is None or value is False:
            continue
        out += [spelling] if value is True else [spelling, str(value)]
    return out


def runtime_for(cmd: Sequence[str], given: Mapping[str, Any], runtime: str = "auto",
                backend: str | None = None) -> str:
    """The runtime ``ggufpack run`` would serve an image with ``cmd`` and the settings ``given`` with
    (``llama-cpp-python`` or ``llama-server``)."""
    from ggufpack.options.default_runtime import cannot_honour
    from ggufpack.options.server_args import ServerArgsError
    from ggufpack.run.runtimes import choose_runtime

    if runtime not in RUNTIMES:
        raise GGUFPackError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime != "auto":
        return runtime
    try:
        refusals = cannot_honour([*cmd, *_as_arguments(given)])
    except ServerArgsError:
        refusals = []  # llama-server would refuse this CMD too: run says so; the estimate still reads it
    try:
        return choose_runtime("auto", backend, refusals)
    except GGUFPackError:
        return "llama-server"  # nothing installed serves it: what llama-server would allocate


def _nvidia_gpus() -> int:
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 1
    count = sum(1 for line in done.stdout.splitlines() if line.startswith("GPU "))
    return count if done.returncode == 0 and count else 1


def runtime_gpus(runtime: str, backend: str | None = None) -> int:
    """How many GPUs ``runtime`` can put layers on here (0: a CPU build, every layer on the host)."""
    from ggufpack.backends import META, resolve_backend
    from ggufpack.backends.capability import preferred_accelerators
    from ggufpack.backends.detect import detect_device

    if runtime == "llama-cpp-python":
        from ggufpack.backends.registry import in_process

        accelerator = in_process().accelerator
    else:
        try:
            accelerator = resolve_backend(backend or META, "server").accelerator
        except GGUFPackError:  # none installed: the build `ggufpack backends install llama.cpp` would make
            accelerator = preferred_accelerators(detect_device())[0]
    if accelerator == "cpu":
        return 0
    return _nvidia_gpus() if accelerator == "cuda" else 1
