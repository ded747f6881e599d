"""llama.cpp backends: where quantize, imatrix and server come from.

A backend is a llama.cpp build offering some of the capabilities ``quantize``, ``imatrix`` and
``server``:

- ``llama-cpp-python`` (kind ``in-process``): the library in this process, always there;
- ``numpy`` (kind ``fallback``): :mod:`ggufpack.quantize.fallback`, a few types with no llama.cpp;
- ``llama.cpp-cpu|cuda|rocm|vulkan`` (kind ``built``): compiled by ``ggufpack backends install``
  into ``<home>/backends/<name>/`` with a ``metadata.json``;
- sideloaded tool builds (kind ``sideloaded``) found on ``PATH``, ``GGUFPACK_BACKENDS_PATH`` or
  configured directories, used in place; what we learn about them goes to ``<home>/state/backends/``.

The meta name ``llama.cpp`` resolves to the best installed variant for the detected accelerator
(see :mod:`ggufpack.backends.capability`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GGUFPackError

CAPABILITIES = frozenset({"quantize", "imatrix", "server"})
#: the name of the in-process backend, the default everywhere a backend can be chosen
IN_PROCESS = "llama-cpp-python"
#: the meta name that resolves to the best concrete ``llama.cpp-<accelerator>`` variant
META = "llama.cpp"


@dataclass(frozen=True)
class Backend:
    """One llama.cpp build (or the in-process library) and what it can do."""

    name: str
    kind: str  # "in-process" | "built" | "sideloaded" | "fallback"
    path: Path | None  # directory holding the tool binaries (None when nothing runs out of process)
    version: str  # llama.cpp version/build id: part of cache keys
    accelerator: str  # "cpu" | "cuda" | "rocm" | "vulkan"
    capabilities: frozenset[str]
    #: why some of its tools were not usable when it was probed (a sideloaded build)
    problems: tuple[str, ...] = field(default=(), compare=False)

    def tool(self, name: str) -> Path:
        """The path of tool ``name`` (``llama-quantize``, ``llama-imatrix``, ``llama-server``), checked to
        be safe to run (:mod:`ggufpack.backends.trust`): a built backend's tool and every directory up to
        the store root (``<home>/backends/<name>/bin/<tool>``), a sideloaded one and its directory."""
        from .trust import check_trusted

        if self.path is not None:
            candidate = self.path / name
            if candidate.is_file():
                check_trusted(candidate, self.path.parents[2] if self.kind == "built" else self.path,
                              f"backend {self.name!r}'s")
                return candidate
        raise GGUFPackError(
            f"backend {self.name!r} ({self.kind}) has no {name} tool"
            + (f" in {self.path}" if self.path is not None else "")
            + "; choose another backend (ggufpack backends list) or install one (ggufpack backends install llama.cpp)"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path) if self.path is not None else None,
            "version": self.version,
            "accelerator": self.accelerator,
            "capabilities": sorted(self.capabilities),
        }


def resolve_backend(name: str | None, capability: str) -> Backend:
    """The backend called ``name`` that offers ``capability``.

    ``None`` is the in-process llama-cpp-python; ``"llama.cpp"`` the best installed variant for the
    detected accelerator; anything else a backend name as ``ggufpack backends list`` shows it.
    """
    from .registry import resolve

    return resolve(name, capability)


def list_backends() -> list[Backend]:
    """Every backend usable here: in-process, fallback, built and sideloaded."""
    from .registry import discover

    return discover()


__all__ = ["CAPABILITIES", "IN_PROCESS", "META", "Backend", "list_backends", "resolve_backend"]
