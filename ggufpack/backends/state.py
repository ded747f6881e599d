"""Where backends and what we know about them live, and reading/writing those records.

```
<home>/backends/<name>/metadata.json     a built backend (bin/ holds its tools)
<home>/state/backends/<name>.json        our record of a sideloaded build (never beside its files)
<home>/config/backends.json              {"dirs": [{"path": ..., "name": ...}]}: configured sideload dirs
```

``<home>`` is the store root (``GGUFPACK_HOME``). Every write is atomic (temp file + rename).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import GGUFPackError, UsageError
from ..store.layout import Layout, default_root
from ..util.fsutil import atomic_write, read_small_file
from .trust import check_trusted

METADATA = "metadata.json"
#: metadata, records and the configuration are a few KiB; a bigger file is not ours
_MAX_RECORD = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_name(name: str) -> str:
    """A backend name is a path component: refuse anything that could escape its directory."""
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"{name!r} is not a valid backend name: use letters, digits and . _ + - (at most 100)")
    return name


def home() -> Path:
    return default_root()


def backends_dir(root: Path | None = None) -> Path:
    return (root or home()) / "backends"


def sideload_state_dir(root: Path | None = None) -> Path:
    return Layout(root or home()).state_dir("backends")


def config_path(root: Path | None = None) -> Path:
    return (root or home()) / "config" / "backends.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is absent. A corrupt file is a clear error, and so is
    one that is not a small regular file (a FIFO, a device, a symlink planted in the store)."""
    try:
        data = json.loads(read_small_file(path, _MAX_RECORD))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError, GGUFPackError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise GGUFPackError(f"cannot read {path}: {reason}; delete it and run the command again") from exc
    if not isinstance(data, dict):
        raise GGUFPackError(f"{path} does not hold a JSON object; delete it and run the command again")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, text.encode("utf-8"), path.parent)


def configured_dirs(root: Path | None = None) -> list[dict[str, str]]:
    """The sideload directories added with ``ggufpack backends add`` (``path`` and optional ``name``).

    They name code that ggufpack runs, so the file is believed only when it and each directory up to the
    store root are owned by the user (or root) and writable by no one else (:mod:`.trust`)."""
    path = config_path(root)
    if os.path.lexists(path):
        check_trusted(path, path.parent.parent, "the sideload configuration")
    data = read_json(path) or {}
    dirs = data.get("dirs", [])
    return [d for d in dirs if isinstance(d, dict) and isinstance(d.get("path"), str)]


def save_configured_dirs(dirs: list[dict[str, str]], root: Path | None = None) -> None:
    write_json(config_path(root), {"dirs": dirs})
