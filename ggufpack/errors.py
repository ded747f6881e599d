"""Error types shared by every layer of ggufpack.

The CLI maps them to exit codes: :class:`UsageError` (and so every Packerfile error) exits with 2,
any other :class:`GGUFPackError` with 1. Anything else is a bug and shows a traceback only with
``--debug``.
"""

from __future__ import annotations

from dataclasses import dataclass


class GGUFPackError(Exception):
    """A failure the user can act on; printed without a traceback."""

    exit_code = 1


class UsageError(GGUFPackError):
    """Wrong command-line usage or wrong input text."""

    exit_code = 2


@dataclass(frozen=True)
class SourcePosition:
    """A 1-based line and column in a named file."""

    file: str
    line: int
    column: int = 1


class PackerfileError(UsageError):
    """An error in a Packerfile, reported as ``FILE:LINE:COL: message`` plus the offending line."""

    def __init__(self, message: str, position: SourcePosition, source_line: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.source_line = source_line

    def __str__(self) -> str:
        pos = self.position
        text = f"{pos.file}:{pos.line}:{pos.column}: {self.message}"
        if self.source_line is not None:
            line = self.source_line.rstrip("\n").expandtabs(1)
            text += f"\n    {line}\n    {' ' * (max(pos.column, 1) - 1)}^"
        return text


class Interrupted(GGUFPackError):
    """Stopped on request (SIGINT/SIGTERM) at a safe point; the work can be resumed."""

    exit_code = 130
