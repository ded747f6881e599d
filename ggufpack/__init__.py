"""ggufpack: build, store, ship and run GGUF model images as OCI images, with no daemon.

``from ggufpack import build`` is the library API (:mod:`ggufpack.api`); it is loaded on first use, so
that ``import ggufpack`` stays light.
"""

from __future__ import annotations

from typing import Any

from .version import __version__

__all__ = ["__version__", "build"]


def __getattr__(name: str) -> Any:
    if name == "build":
        from .api import build

        return build
    raise AttributeError(f"module 'ggufpack' has no attribute {name!r}")
