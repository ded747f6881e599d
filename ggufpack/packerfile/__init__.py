"""The Packerfile language: lexing (``lexer``), variable expansion (``expand``) and typed
instructions (``instructions``). The stage graph built from them lives in :mod:`ggufpack.plan`."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .lexer import ParsedText, lex

DEFAULT_FILENAME = "GGUFPackerfile"


def read_packerfile(path: Path, display_name: str | None = None) -> ParsedText:
    """Read and lex a Packerfile; the display name is what error messages call the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no Packerfile at {path}: pass -f <file> or add a {DEFAULT_FILENAME}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    name = display_name or str(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{name}:{line}: the Packerfile is not valid UTF-8") from None
    return lex(text, name)


__all__ = ["DEFAULT_FILENAME", "ParsedText", "lex", "read_packerfile"]
