"""What every architecture module answers, as Ollama's per-architecture converters do.

Three answers: the GGUF key/values from the HF config (:meth:`Architecture.write_hparams`), the
tensor list with its transforms and GGUF names (:meth:`Architecture.tensors`), and which GGUF
architecture that is (:attr:`Architecture.gguf_arch`). Tensors are planned, not loaded: each
:class:`PlannedTensor` carries a ``load`` callable that the writer calls once, when it writes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gguf
import numpy as np

from ggufpack.convert.checkpoint import Checkpoint
from ggufpack.errors import GGUFPackError


@dataclass(frozen=True)
class PlannedTensor:
    """One GGUF tensor: its name, its numpy-order shape, and how to produce its float32 data."""

    name: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]
    source_dtype: str  # F32/F16/BF16..., to pick the AUTO output type


class Architecture(Protocol):
    gguf_arch: gguf.MODEL_ARCH

    def write_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None: ...

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]: ...


def hparam(config: dict[str, Any], *keys: str, default: Any = ..., where: str = "config.json") -> Any:
    """The first of ``keys`` present in ``config``; without a default, a missing key is an error."""
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    if default is ...:
        raise GGUFPackError(f"{where}: missing {' / '.join(keys)}")
    return default
