"""A weight kept as its two LoRA factors, ``W = b @ a``, that architecture transforms can act on.

An architecture's ``transform`` rewrites a base weight on its way to GGUF (Llama permutes the q/k
rows for llama.cpp's RoPE; GPT-2 transposes Conv1D weights). A LoRA delta must undergo the same
rewrite, but it must stay low-rank: ``transform(b @ a)`` has to come out as ``b' @ a'``. The
transforms we have are all layout changes (reshapes, axis swaps, row selections, row scaling), and
each of those has a factored form: one that keeps the row length acts on ``b`` alone, a 2-D
transpose swaps and transposes the factors. :class:`LowRank` implements exactly those numpy
operations, so the architecture's own code runs on it unchanged, and refuses anything else (adding
an offset, mixing columns, densifying) with :class:`UnsupportedLowRank` rather than guessing.
llama.cpp's ``convert_lora_to_gguf.py`` does the same with torch tensors.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ggufpack.errors import GGUFPackError


class UnsupportedLowRank(GGUFPackError):
    """A transform used an operation that has no low-rank form."""


class LowRank:
    """The matrix (or stack of rows) ``b @ a``: ``a`` is ``(rank, columns)``, ``b`` is ``(*rows, rank)``."""

    __array_ufunc__ = None  # np.add(w, 1), w + 1, ...: a TypeError, never a silent densify

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.ndim != 2 or b.ndim < 2 or a.shape[0] != b.shape[-1]:
            raise UnsupportedLowRank(f"factors of shapes {a.shape} and {b.shape} do not make a low-rank product")
        self.a, self.b = a, b

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.b.shape[:-1], self.a.shape[1])

    @property
    def ndim(self) -> int:
        return self.b.ndim

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(self.a, self.b)

    def reshape(self, *shape: Any) -> LowRank:
        new = _shape_argument(shape, self.size)
        if len(new) < 2 or new[-1] != self.shape[-1]:
            raise UnsupportedLowRank(f"a reshape of {self.shape} to {new}, which changes the row length")
        return LowRank(self.a, self.b.reshape(*new[:-1], self.rank))

    def transpose(self, *axes: Any) -> LowRank:
        order = _axes_argument(axes, self.ndim)
        last = self.ndim - 1
        if order[-1] == last:
            return LowRank(self.a, self.b.transpose(*order[:-1], last))
        if order == (1, 0):
            return LowRank(self.b.T, self.a.T)
        raise UnsupportedLowRank(f"a transpose {order} of a {self.ndim}-D weight that moves its columns")

    @property
    def T(self) -> LowRank:
        return self.transpose()

    def swapaxes(self, axis1: int, axis2: int) -> LowRank:
        order = list(range(self.ndim))
        i, j = (_axis(axis1, self.ndim), _axis(axis2, self.ndim))
        order[i], order[j] = order[j], order[i]
        return self.transpose(*order)

    def __getitem__(self, key: Any) -> LowRank:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis or k is None for k in key):
            raise UnsupportedLowRank("indexing with ... or None")
        if len(key) == self.ndim:
            if key[-1] != slice(None):
                raise UnsupportedLowRank("a selection of columns")
            key = key[:-1]
        elif len(key) > self.ndim:
            raise UnsupportedLowRank(f"an index of {len(key)} axes into a {self.ndim}-D weight")
        b = self.b[key]
        if b.ndim < 2:
            raise UnsupportedLowRank("a selection of a single row")
        return LowRank(self.a, b)

    def _scaled(self, other: Any, op: Callable[[Any, Any], Any]) -> LowRank:
        factor = np.asarray(other)
        if factor.ndim and factor.shape[-1] != 1:
            raise UnsupportedLowRank("an element-wise product that mixes columns (only row scales factor out)")
        return LowRank(self.a, op(self.b, factor))

    def __mul__(self, other: Any) -> LowRank:
        return self._scaled(other, operator.mul)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> LowRank:
        return self._scaled(other, operator.truediv)

    def __neg__(self) -> LowRank:
        return LowRank(self.a, -self.b)

    def astype(self, dtype: Any, **_: Any) -> LowRank:
        return LowRank(self.a.astype(dtype), self.b.astype(dtype))

    def copy(self) -> LowRank:
        return LowRank(self.a.copy(), self.b.copy())

    def __array__(self, *_: Any, **__: Any) -> np.ndarray:
        raise UnsupportedLowRank("an operation that needs the dense matrix")

    def __array_function__(self, func: Any, types: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        if func not in (np.reshape, np.transpose, np.swapaxes):
            raise UnsupportedLowRank(f"numpy.{func.__name__}")
        if not args or args[0] is not self or kwargs.get("order", "C") != "C":
            raise UnsupportedLowRank(f"numpy.{func.__name__} with these arguments")
        rest = list(args[1:])
        if func is np.reshape:
            return self.reshape(rest[0] if rest else kwargs.get("shape", kwargs.get("newshape")))
        if func is np.transpose:
            return self.transpose(rest[0] if rest else kwargs.get("axes"))
        return self.swapaxes(*rest, *(kwargs[k] for k in ("axis1", "axis2") if k in kwargs))


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise UnsupportedLowRank(f"axis {axis} of a {ndim}-D weight")
    return axis % ndim


def _axes_argument(axes: tuple[Any, ...], ndim: int) -> tuple[int, ...]:
    if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
        axes = tuple(axes[0]) if axes[0] is not None else ()
    order = tuple(_axis(int(a), ndim) for a in axes) if axes else tuple(reversed(range(ndim)))
    if sorted(order) != list(range(ndim)):
        raise UnsupportedLowRank(f"transpose axes {axes} for a {ndim}-D weight")
    return order


def _shape_argument(shape: tuple[Any, ...], size: int) -> tuple[int, ...]:
    dims = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    dims = tuple(int(d) for d in dims)
    if dims.count(-1) == 1:
        known = math.prod(d for d in dims if d != -1)
        dims = tuple(size // known if d == -1 else d for d in dims)
    if math.prod(dims) != size:
        raise UnsupportedLowRank(f"a reshape to {dims}, which does not hold {size} elements")
    return dims
