"""Value syntaxes several flags share: sizes (``--split-max-size=2G``, ``--chunk-size``)."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^(\d+)([KMGT]?)$", re.IGNORECASE)

SIZE_HELP = "write a number with an optional K, M, G or T suffix"


def size_in_bytes(value: str) -> int | None:
    """``2G``, ``500M``, ``4096`` → bytes (decimal units, as llama.cpp's ``--split-max-size``); None if invalid."""
    match = _SIZE_RE.match(value)
    if not match or int(match.group(1)) == 0:
        return None
    return int(match.group(1)) * 1000 ** "_KMGT".index(match.group(2).upper() or "_")
