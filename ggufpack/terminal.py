"""Text that came from an image (GGUF metadata, labels, refs, layer history) made safe to print.

Such text can hold anything: ESC and CSI/OSC sequences that recolour, retitle or rewrite a
terminal, other C0/C1 controls, line separators, bidi overrides that show a string in another order
than it is. ``list``, ``inspect`` and ``ps`` print it through :func:`cell` (the characters of
:data:`ggufpack.errors.UNSAFE_CHARS` shown as visible ones, as in error messages, and tabs and
newlines too, so one value stays on one line), and JSON through :func:`terminal_json` (the same
characters written as JSON ``\\u`` escapes: the same JSON value, nothing raw on the terminal).
"""

from __future__ import annotations

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
