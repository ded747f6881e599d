"""All backends usable here, choosing one by name and capability, and removing one."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from functools import cache
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from ..errors import GGUFPackError, UsageError
from . import IN_PROCESS, META, Backend
from .capability import accelerator_of, preferred_accelerators, select_variant, variant_name
from .sideload import candidates, forget, record
from .state import METADATA, backends_dir, check_name, read_json

FALLBACK = "numpy"
#: what llama-cpp-python's OpenAI-compatible server needs beyond the library itself
_SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


@cache
def in_process() -> Backend:
    """llama-cpp-python in this process (its accelerator is what its shared libraries were built for)."""
    import llama_cpp

    from .probe import linked_accelerator

    lib = Path(llama_cpp.__file__).parent / "lib"
    capabilities = {"quantize", "imatrix"}
    if all(importlib.util.find_spec(m) is not None for m in _SERVER_MODULES):
        capabilities.add("server")
    return Backend(
        name=IN_PROCESS, kind="in-process", path=None, version=f"llama-cpp-python-{llama_cpp.__version__}",
        accelerator=linked_accelerator(sorted(lib.glob("libllama.so*"))[:1]), capabilities=frozenset(capabilities),
    )


def fallback() -> Backend:
    """The numpy quantizer: its bytes depend on the ``gguf`` package's quants, hence that version."""
    return Backend(
        name=FALLBACK, kind="fallback", path=None, version=f"gguf-py-{package_version('gguf')}", accelerator="cpu",
        capabilities=frozenset({"quantize"}),
    )


def backend_from_metadata(data: dict[str, Any]) -> Backend:
    problems = data.get("problems")
    return Backend(
        name=str(data["name"]), kind=str(data["kind"]), path=Path(data["path"]), version=str(data["version"]),
        accelerator=str(data["accelerator"]), capabilities=frozenset(data.get("capabilities", ())),
        problems=tuple(str(p) for p in problems) if isinstance(problems, list) else (),
    )


def _built_at(entry: Path) -> Backend | None:
    """The built backend in directory ``entry``; its tools are found where the directory is now."""
    data = read_json(entry / METADATA) if entry.is_dir() and not entry.name.startswith(".") else None
    return None if data is None else backend_from_metadata({**data, "path": str(entry / "bin")})


def built(root: Path | None = None) -> list[Backend]:
    """Backends installed by ``ggufpack backends install`` (a directory with a ``metadata.json``)."""
    directory = backends_dir(root)
    found = (_built_at(entry) for entry in sorted(directory.iterdir())) if directory.is_dir() else ()
    return [backend for backend in found if backend is not None]


def sideloaded(root: Path | None = None) -> list[Backend]:
    return [backend_from_metadata(record(c, root)) for c in candidates(root)]


def discover(root: Path | None = None) -> list[Backend]:
    return [in_process(), fallback(), *built(root), *sideloaded(root)]


def _best_built(root: Path | None = None) -> Backend:
    """What the meta name ``llama.cpp`` means here: the best installed variant for the detected accelerator."""
    from .detect import detect_device

    device = detect_device()
    installed = {b.name: b for b in built(root)}
    chosen = select_variant(device, frozenset(installed))
    if chosen is None:
        raise GGUFPackError(
            f"no llama.cpp backend is installed (this machine: {device.summary()}, best variant "
            f"{variant_name(preferred_accelerators(device)[0])}); run: ggufpack backends install {META}"
        )
    return installed[chosen]


def find(name: str | None, root: Path | None = None) -> Backend:
    """The backend called ``name`` (None: the in-process one), whatever it can do."""
    if name is None or name == IN_PROCESS:
        return in_process()
    if name == FALLBACK:
        return fallback()
    if name == META:
        return _best_built(root)
    installed = _built_at(backends_dir(root) / check_name(name))
    if installed is not None:
        return installed
    for backend in sideloaded(root):
        if backend.name == name:
            return backend
    known = ", ".join(b.name for b in discover(root))
    hint = f"run: ggufpack backends install {name}" if accelerator_of(name) else "see: ggufpack backends list"
    raise GGUFPackError(f"no backend named {name!r} (known: {known}, and {META}); {hint}")


def resolve(name: str | None, capability: str) -> Backend:
    backend = find(name)
    if capability not in backend.capabilities:
        offered = ", ".join(sorted(backend.capabilities)) or "nothing (its tools do not run)"
        why = "".join(f"; {problem}" for problem in backend.problems)
        raise GGUFPackError(
            f"backend {backend.name!r} cannot {capability} (it offers {offered}{why}); choose another with "
            "--backend (ggufpack backends list)"
        )
    return backend


def remove(name: str, root: Path | None = None) -> str:
    """Remove a built backend, or forget a sideloaded one (its files stay); a line saying what happened."""
    if name in (IN_PROCESS, FALLBACK):
        raise UsageError(f"{name} is part of ggufpack and cannot be removed")
    backend = _best_built(root) if name == META else find(name, root)
    if backend.kind == "built":
        final = backends_dir(root) / backend.name
        if final.is_symlink():  # a build kept elsewhere and linked in: drop the link only
            final.unlink()
            return f"removed {backend.name} (a link to {final.resolve()}, which is kept)"
        with tempfile.TemporaryDirectory(prefix=f".remove-{backend.name}-", dir=final.parent) as temp:
            os.rename(final, Path(temp) / backend.name)  # gone at once; deleted after
            shutil.rmtree(Path(temp) / backend.name)
        return f"removed {backend.name} ({final})"
    forget(backend.name, root)
    still = any(c.name == backend.name for c in candidates(root))
    note = "; it is still on PATH or GGUFPACK_BACKENDS_PATH, so it will be found again" if still else ""
    return f"forgot sideloaded {backend.name} (its files in {backend.path} are untouched){note}"
