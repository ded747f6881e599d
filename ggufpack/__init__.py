"""ggufpack: build, store, ship and run GGUF model images as OCI images, with no daemon.

``from ggufpack import build, convert, quantize, push, pull, estimate, run`` is the library API
(:mod:`ggufpack.api`); it is loaded on first use, so that ``import ggufpack`` stays light.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .api import build, convert, estimate, pull, push, quantize, run

__all__ = ["__version__", "build", "convert", "estimate", "pull", "push", "quantize", "run"]
#: the library API's functions, in :mod:`ggufpack.api`
API = frozenset(__all__) - {"__version__"}


class _Package(types.ModuleType):
    """The type of the ``ggufpack`` module. Four API names are also subpackages (``ggufpack.convert``,
    ``.quantize``, ``.estimate``, ``.run``), and importing a subpackage records it on its parent; here
    such a name stays the API function. The subpackages are untouched: ``from ggufpack.run import
    detached`` and ``python -m ggufpack.run.lcpp_server`` find them in ``sys.modules`` as ever, but an
    attribute chain through the package (``import ggufpack.run.server as s``) reaches the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name in API:
        from . import api

        function = getattr(api, name)
        globals()[name] = function
        return function
    raise AttributeError(f"module 'ggufpack' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
