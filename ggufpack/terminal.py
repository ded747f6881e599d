"""Text that came from an image (GGUF metadata, labels, refs, layer history) made safe to print.

Such text can hold anything: ESC and CSI/OSC sequences that recolour, retitle or rewrite a
terminal, other C0/C1 controls, line separators, bidi overrides that show a string in another order
than it is. ``list``, ``inspect`` and ``ps`` print it through :func:`cell` (the characters of
:data:`ggufpack.errors.UNSAFE_CHARS` shown as visible ones, as in error messages, and tabs and
newlines too, so one value stays on one line), and JSON through :func:`terminal_json` (the same
characters written as JSON ``\\u`` escapes: the same JSON value, nothing raw on the terminal).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from ggufpack.errors import UNSAFE_CHARS, printable

_LINE_BREAKS = str.maketrans({"\t": "\u2409", "\n": "\u2424"})  # ␉ ␤


def cell(text: str) -> str:
    """``text`` on one line with every control, format or separator character shown visibly."""
    return printable(text).translate(_LINE_BREAKS)


def _json_escape(char: str) -> str:
    data = char.encode("utf-16-be", "surrogatepass")
    return "".join(f"\\u{int.from_bytes(data[i:i + 2], 'big'):04x}" for i in range(0, len(data), 2))


def terminal_json(obj: Any, *, indent: int | None = 2) -> str:
    """``json.dumps`` that keeps readable non-ASCII text but writes unsafe characters as ``\\u`` escapes
    (json itself escapes C0 controls; the others can only occur inside strings, where an escape means
    the same value)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    return UNSAFE_CHARS.sub(lambda m: _json_escape(m.group()), text)


def human_size(n: int) -> str:
    """Binary units as gguf-packer prints them: ``379.38 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(created: str, now: datetime.datetime | None = None) -> str:
    """``5 minutes ago`` from an RFC 3339 time (anything else is shown as it is)."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        moment = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
        seconds = max(int((now - moment).total_seconds()), 0)
    except (ValueError, TypeError, OverflowError):  # not a time, no zone, out of range
        return created
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def render_table(rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces; cells are printed escaped (see :mod:`.terminal`)."""
    rows = [[cell(text) for text in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
