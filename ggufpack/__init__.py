"""ggufpack: build, store, ship and run GGUF model images as OCI images, with no daemon."""

from __future__ import annotations

__version__ = "0.1.0"
