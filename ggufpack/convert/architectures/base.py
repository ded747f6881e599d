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
from ggufpack.errors import GGUFPackError, shown


@dataclass(frozen=True)
class PlannedTensor:
    """One GGUF tensor: its name, its numpy-order shape, and how to produce its data.

    ``load`` gives float32 values. ``load_stored``, when set, gives the same values in ``source_dtype``
    (BF16 as its uint16 bits), so that the writer can copy or narrow them without a float32 round trip;
    set it only where the architecture's transform merely moves values (see :func:`moves_values_only`).
    """

    name: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]
    source_dtype: str  # F32/F16/BF16..., to pick the AUTO output type
    load_stored: Callable[[], np.ndarray] | None = None


def moves_values_only(transform: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Mark a tensor transform that only rearranges values (a permute, a reshape), so it is right for any dtype.

    An unmarked transform may change values (a norm's ``+ 1``) and is only ever given float32 data.
    """
    transform.moves_values_only = True  # type: ignore[attr-defined]
    return transform


class Architecture(Protocol):
    gguf_arch: gguf.MODEL_ARCH

    def write_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None: ...

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]: ...


def hparam(config: dict[str, Any], *keys: str, default: Any = ..., where: str = "config.json") -> Any:
    """The first of ``keys`` present in ``config``; without a default, a missing key is an error.

    Every hyperparameter read this way is a size, a count or a scale, so a value that is not a positive
    number is an error naming the key (not a TypeError or ZeroDivisionError further down).
    """
    for key in keys:
        value = config.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise GGUFPackError(f"{where}: {key} must be a positive number, not {shown(value)}")
            return value
    if default is ...:
        raise GGUFPackError(f"{where}: missing {' / '.join(keys)}")
    return default
