"""The Packerfile language: lexing (``lexer``), variable expansion (``expand``) and typed
instructions (``instructions``). The stage graph built from them lives in :mod:`ggufpack.plan`."""

from __future__ import annotations

import codecs
from pathlib import Path

from ..errors import PackerfileError, SourcePosition, UsageError
from .lexer import MAX_PACKERFILE_BYTES, ParsedText, lex, too_big

DEFAULT_FILENAME = "GGUFPackerfile"


def read_packerfile(path: Path, display_name: str | None = None) -> ParsedText:
    """Read and lex a Packerfile; the display name is what error messages call the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PACKERFILE_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"no Packerfile at {path}: pass -f <file> or add a {DEFAULT_FILENAME}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    name = display_name or str(path)
    if len(raw) > MAX_PACKERFILE_BYTES:
        raise too_big(name)
    return lex(decode_packerfile(raw, name), name)


def decode_packerfile(raw: bytes, name: str) -> str:
    """UTF-8 (a BOM is dropped) → text; an invalid byte is a :class:`PackerfileError` at its line and column."""
    body = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = body.rfind(b"\n", 0, exc.start) + 1
        line_end = body.find(b"\n", exc.start)
        source = body[line_start : line_end if line_end >= 0 else len(body)].decode("utf-8", errors="replace")
        column = len(body[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        position = SourcePosition(name, body.count(b"\n", 0, exc.start) + 1, column)
        raise PackerfileError(f"the Packerfile is not valid UTF-8: byte 0x{body[exc.start]:02x} here "
                              "(save the file as UTF-8)", position, source) from None


__all__ = ["DEFAULT_FILENAME", "MAX_PACKERFILE_BYTES", "ParsedText", "decode_packerfile", "lex", "read_packerfile"]
