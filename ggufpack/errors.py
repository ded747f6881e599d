"""Error types shared by every layer of ggufpack.

The CLI maps them to exit codes: :class:`UsageError` (and so every Packerfile error) exits with 2,
any other :class:`GGUFPackError` with 1. Anything else is a bug and shows a traceback only with
``--debug``.
"""

from __future__ import annotations

import errno
import re
import reprlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

#: C0 controls but tab and newline, DEL, C1 controls: what could move a terminal's cursor or recolor it;
#: and what could make text read otherwise than it is: bidi marks, embeddings, overrides and isolates,
#: zero-width and other invisible format characters, line/paragraph separators, lone surrogates
_CONTROL_RE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
    "\ud800-\udfff\U000e0000-\U000e007f]"
)
#: the same characters, for other renderers (JSON output, table cells)
UNSAFE_CHARS = _CONTROL_RE
#: the most characters of one message printed (its two ends); a longer one echoes input, not advice
MAX_MESSAGE_CHARS = 8000


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return chr(0x2400 + code) if code < 0x20 else "\u2421" if code == 0x7F else "\ufffd"


def printable(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` safe for a terminal: control characters shown as one visible character each (columns
    stay aligned), and at most ``limit`` characters, the middle left out."""
    if len(text) > limit:
        head, tail = limit * 2 // 3, limit // 3
        text = f"{text[:head]} [... {len(text) - head - tail} characters left out ...] {text[-tail:]}"
    return _CONTROL_RE.sub(_visible, text)


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = _SHOWN.maxlong = 80
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 6
_SHOWN.maxlevel = 3


def shown(value: object) -> str:
    """``repr(value)`` cut to a line: for echoing untrusted input (a file name, a config value) in a message.

    Long strings and numbers keep their start and end, long lists and objects their first items, so a
    100 MB string or a million-item list costs the message a few dozen characters.
    """
    try:
        return _SHOWN.repr(value)
    except ValueError:  # an int past Python's 4300-digit str() limit
        return f"<a {type(value).__name__} too long to print>"


def clipped(text: str, limit: int = 120) -> str:
    """:func:`printable` for one untrusted value inside a message (a name, a path): a line at most."""
    return printable(text, limit)


@dataclass(frozen=True)
class SourcePosition:
    """A 1-based line and column in a named file."""

    file: str
    line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


_E = TypeVar("_E", bound="GGUFPackError")


def _prefixed(exc: GGUFPackError, text: str) -> str:
    return text if exc.location is None else f"{exc.location}: {text}"


class GGUFPackError(Exception):
    """A failure the user can act on; printed without a traceback.

    An error may carry the :class:`SourcePosition` of the Packerfile instruction it happened in
    (:meth:`with_location`); ``str()`` then reads ``FILE:LINE:COL: message``, for every subclass,
    also one that defines its own ``__str__``.
    """

    exit_code = 1
    #: the Packerfile instruction the error happened in (None: not tied to one)
    location: SourcePosition | None = None

    def with_location(self: _E, position: SourcePosition) -> _E:
        """This error, located at ``position`` unless it is located already (the innermost location
        wins, as BuildKit's ``WithLocation``); the error itself, its type, cause and traceback stay."""
        if self.location is None:
            self.location = position
        return self

    def __str__(self) -> str:
        text = super().__str__()
        return _prefixed(self, text) if type(self).__str__ is GGUFPackError.__str__ else text

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's own ``__str__`` renders the message; the location is put in front of it once,
        by the most derived class's (so a ``super().__str__()`` inside one adds no second prefix)."""
        super().__init_subclass__(**kwargs)
        own: Callable[[GGUFPackError], str] | None = cls.__dict__.get("__str__")
        if own is None:
            return

        def __str__(self: GGUFPackError) -> str:
            text = own(self)
            return _prefixed(self, text) if type(self).__str__ is located_str else text

        located_str = __str__
        located_str.__doc__ = own.__doc__
        cls.__str__ = located_str  # type: ignore[method-assign]


@contextmanager
def located(position: SourcePosition | None) -> Iterator[None]:
    """Attach ``position`` (when given) to a :class:`GGUFPackError` raised inside the block; the
    error is re-raised as it is, so its type, its cause and its traceback stay."""
    try:
        yield
    except GGUFPackError as exc:
        if position is not None:
            exc.with_location(position)
        raise


class UsageError(GGUFPackError):
    """Wrong command-line usage or wrong input text."""

    exit_code = 2


#: the most characters of a source line shown under an error
_SOURCE_WINDOW = 160


class PackerfileError(UsageError):
    """An error in a Packerfile, reported as ``FILE:LINE:COL: message`` plus the offending line."""

    def __init__(self, message: str, position: SourcePosition, source_line: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = position
        self.source_line = source_line

    @property
    def position(self) -> SourcePosition:
        """Where in the Packerfile: the error's location, given when it was made."""
        assert self.location is not None
        return self.location

    def __str__(self) -> str:
        pos = self.position
        text = printable(self.message)
        if self.source_line is not None:
            line = self.source_line.rstrip("\n").expandtabs(1)
            column = max(pos.column, 1) - 1
            if len(line) > _SOURCE_WINDOW:  # show the part of a long line around the column
                start = max(min(column - _SOURCE_WINDOW // 2, len(line) - _SOURCE_WINDOW), 0)
                line, column = line[start : start + _SOURCE_WINDOW], column - start
            text += f"\n    {_CONTROL_RE.sub(_visible, line)}\n    {' ' * column}^"
        return text


#: errno values that mean the disk (or the user's quota) is full
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(GGUFPackError):
    """No space left on a device (or the quota is reached) while writing; what was half written is gone."""

    @classmethod
    def from_os_error(cls, exc: OSError, path: object = None, advice: str | None = None) -> DiskFullError:
        """The error for ``exc`` while writing ``path``, ending with ``advice`` (default: free some space)."""
        what = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        target = path if path is not None else exc.filename
        where = f" while writing {target}" if target is not None else ""
        advice = advice or "free some space (ggufpack prune removes what no image needs) and try again"
        return cls(f"{what}{where}: {advice}")


class Interrupted(GGUFPackError):
    """Stopped on request (SIGINT/SIGTERM) at a safe point; the work can be resumed."""

    exit_code = 130
