"""Sideloaded llama.cpp builds: tool directories found on the filesystem and used in place.

Searched, in this order: directories added with ``ggufpack backends add`` (config file),
``GGUFPACK_BACKENDS_PATH`` (``os.pathsep``-separated) and ``PATH``. A directory counts when it
holds at least one of ``llama-quantize``, ``llama-imatrix``, ``llama-server``. The directory may be
read-only (a distribution package under ``/usr``): what we learn by probing it is written to
``<home>/state/backends/<name>.json`` and reused until the tools' size or mtime change.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .probe import fingerprint, present_tools, probe
from .state import backends_dir, configured_dirs, read_json, sideload_state_dir, write_json

ENV_PATH = "GGUFPACK_BACKENDS_PATH"


@dataclass(frozen=True)
class Candidate:
    path: Path
    name: str
    found_via: str  # "config" | "GGUFPACK_BACKENDS_PATH" | "PATH"


def derived_name(directory: Path) -> str:
    """A stable name for an unnamed directory: its path as a slug (``/opt/llama/bin`` → ``opt-llama-bin``)."""
    slug = re.sub(r"[^A-Za-z0-9._+]+", "-", str(directory)).strip("-.") or "root"
    if len(slug) > 80:
        slug = f"{slug[:60]}-{hashlib.sha256(str(directory).encode()).hexdigest()[:12]}"
    return slug


def _split(value: str | None) -> list[str]:
    return [item for item in (value or "").split(os.pathsep) if item]


def candidates(root: Path | None = None) -> list[Candidate]:
    """Tool directories to consider, first occurrence of each real directory winning."""
    ours = backends_dir(root).resolve()
    raw = [(Path(d["path"]), d.get("name") or "", "config") for d in configured_dirs(root)]
    raw += [(Path(p), "", ENV_PATH) for p in _split(os.environ.get(ENV_PATH))]
    raw += [(Path(p), "", "PATH") for p in _split(os.environ.get("PATH"))]
    seen: set[Path] = set()
    names: set[str] = set()
    out = []
    for path, name, via in raw:
        try:
            real = path.expanduser().resolve()
        except OSError:
            continue
        if real in seen or real.is_relative_to(ours) or not real.is_dir() or not present_tools(real):
            continue
        seen.add(real)
        name = name or derived_name(real)
        if name in names:
            name = f"{name}-{hashlib.sha256(str(real).encode()).hexdigest()[:8]}"
        names.add(name)
        out.append(Candidate(path=real, name=name, found_via=via))
    return out


def record(candidate: Candidate, root: Path | None = None) -> dict[str, Any]:
    """Our record of ``candidate``: reused while its tools are unchanged, else probed and rewritten."""
    path = sideload_state_dir(root) / f"{candidate.name}.json"
    stamp = fingerprint(candidate.path)
    old = read_json(path)
    if old and old.get("path") == str(candidate.path) and old.get("fingerprint") == stamp:
        if old.get("found_via") != candidate.found_via:
            old["found_via"] = candidate.found_via
            write_json(path, old)
        return old
    found = probe(candidate.path)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    data: dict[str, Any] = {
        "name": candidate.name, "kind": "sideloaded", "path": str(candidate.path), "version": found.version,
        "accelerator": found.accelerator, "capabilities": sorted(found.capabilities),
        "llama_cpp": {"build_number": found.build_number, "commit": found.commit, "built_with": found.built_with},
        "problems": list(found.problems), "found_via": candidate.found_via, "fingerprint": stamp,
        "created": (old or {}).get("created", now), "probed": now,
    }
    write_json(path, data)
    return data


def forget(name: str, root: Path | None = None) -> bool:
    """Drop our record (and config entry) of sideloaded ``name``; the tools themselves are never touched."""
    from .state import save_configured_dirs

    removed = False
    state = sideload_state_dir(root) / f"{name}.json"
    if state.exists():
        state.unlink()
        removed = True
    dirs = configured_dirs(root)
    kept = [d for d in dirs if (d.get("name") or derived_name(Path(d["path"]).expanduser().resolve())) != name]
    if len(kept) != len(dirs):
        save_configured_dirs(kept, root)
        removed = True
    return removed


def add(directory: Path, name: str | None = None, root: Path | None = None) -> dict[str, Any]:
    """Configure ``directory`` as a sideload directory (optionally under ``name``); its fresh record."""
    from ..errors import UsageError
    from . import IN_PROCESS, META
    from .registry import FALLBACK
    from .state import check_name, save_configured_dirs

    if name in (IN_PROCESS, FALLBACK, META):  # those names never reach a sideloaded backend
        raise UsageError(f"{name!r} is a name ggufpack keeps for itself; pick another --name")
    real = directory.expanduser().resolve()
    if not real.is_dir() or not present_tools(real):
        raise UsageError(f"{directory} holds none of llama-quantize, llama-imatrix, llama-server")
    if real.is_relative_to(backends_dir(root).resolve()):
        raise UsageError(f"{directory} is a built backend already; it needs no sideloading")
    chosen = check_name(name) if name else derived_name(real)
    dirs = [d for d in configured_dirs(root) if Path(d["path"]).expanduser().resolve() != real]
    if any(d.get("name") == chosen for d in dirs):
        raise UsageError(f"a sideloaded backend is already named {chosen!r}; pick another --name")
    save_configured_dirs([*dirs, {"path": str(real), "name": chosen}], root)
    return record(Candidate(path=real, name=chosen, found_via="config"), root)
