"""Golden files: expected outputs kept under ``tests/golden/`` and compared as data.

A golden is a specification written down, not a snapshot to trust blindly: regenerate with
``GGUFPACK_UPDATE_GOLDEN=1`` only to save typing, then read the diff against the Packerfile line by
line before committing it.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
UPDATE_ENV = "GGUFPACK_UPDATE_GOLDEN"

#: stand-ins for the values of a plan that depend on where and on what machine it was made
FILE_PLACEHOLDER = "<packerfile>"
PLATFORM_PLACEHOLDER = "<platform>"


def updating() -> bool:
    """Whether this run rewrites goldens instead of checking them."""
    return os.environ.get(UPDATE_ENV, "") not in ("", "0", "false", "no")


def normalize_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """A plan's JSON with only the machine-dependent parts replaced: the Packerfile path and the
    platform (``ggufpack plan`` defaults it to this machine's). Everything else is compared."""
    out = dict(plan)
    out["file"] = FILE_PLACEHOLDER
    out["platform"] = PLATFORM_PLACEHOLDER
    return out


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json"


def check_golden(name: str, actual: Any) -> None:
    """Assert that ``actual`` equals ``tests/golden/<name>.json`` (or write it when updating).

    On a mismatch the assertion message is a unified diff of the two, golden first.
    """
    path = golden_path(name)
    if updating():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump(actual), encoding="utf-8")
        return
    if not path.exists():
        raise AssertionError(
            f"no golden file {path}: write the expected output there (or run with {UPDATE_ENV}=1 once "
            "and review the result against the Packerfile by hand)"
        )
    expected = json.loads(path.read_text(encoding="utf-8"))
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                _dump(expected).splitlines(keepends=True), _dump(actual).splitlines(keepends=True),
                fromfile=f"golden/{name}.json (expected)", tofile="ggufpack plan (actual)",
            )
        )
        raise AssertionError(f"plan differs from golden {path.name}:\n{diff}")
