"""Docker-compatible ignore rules for the build context.

The rules file is ``.ggufpackerignore``, or ``.dockerignore`` when that is absent. Semantics follow
Docker's ``.dockerignore`` (moby/patternmatcher):

* one pattern per line; blank lines and lines starting with ``#`` are skipped;
* a leading ``!`` makes the line an exception that re-includes what it matches;
* patterns are cleaned like Go's ``filepath.Clean`` and a leading ``/`` is dropped, so every pattern
  is relative to the context root;
* Go ``filepath.Match`` syntax (``*`` and ``?`` never cross ``/``, ``[...]`` classes with ``^`` for
  negation, ``\\`` escapes) plus ``**``, which matches any number of path segments, including none;
* a pattern that matches a directory also matches everything below it;
* rules are read top to bottom and the last one that matches a path decides.

The same matcher serves ``ADD/COPY --exclude`` patterns and source globs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ggufpack.errors import UsageError

IGNORE_FILES = (".ggufpackerignore", ".dockerignore")


def clean_path(path: str) -> str:
    """Go's ``filepath.Clean`` for slash paths, with a leading ``/`` dropped (``"/a//b/"`` → ``"a/b"``)."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if len(cleaned) > 1 and cleaned.startswith("/"):
        cleaned = cleaned[1:]
    return cleaned


def _translate_class(pattern: str, start: int) -> tuple[str, int]:
    """Translate the ``[...]`` class opening at ``start``; return its regex and the index after it.

    Go's grammar: ``[`` [``^``] ranges ``]`` where a range is ``c`` or ``lo-hi`` and ``\\`` escapes a
    character; an empty class, an unescaped ``-`` or ``]`` where a character is due, or a missing
    ``]`` is malformed.
    """
    i = start + 1
    out = "["
    if i < len(pattern) and pattern[i] == "^":
        out += "^"
        i += 1
    ranges = 0

    def char() -> str:
        nonlocal i
        if i >= len(pattern) or pattern[i] in "-]":
            raise ValueError("malformed character class")
        if pattern[i] == "\\":
            i += 1
            if i >= len(pattern):
                raise ValueError("malformed character class")
        c = pattern[i]
        i += 1
        return re.escape(c)

    while True:
        if i >= len(pattern):
            raise ValueError("unterminated character class")
        if pattern[i] == "]" and ranges:
            return out + "]", i + 1
        out += char()
        if i < len(pattern) and pattern[i] == "-":
            i += 1
            out += "-" + char()
        ranges += 1


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile one cleaned pattern into an anchored regex over slash-separated relative paths.

    Raises ``ValueError`` for a malformed pattern (an unterminated ``[`` class, say).
    """
    out = "^"
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                # "**" at the end matches everything; elsewhere it eats zero or more whole segments.
                out += ".*" if i >= n else "(?:.*/)?"
                continue
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            regex, i = _translate_class(pattern, i)
            out += regex
            continue
        elif ch == "\\":
            i += 1
            out += re.escape(pattern[i]) if i < n else re.escape("\\")
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$", re.DOTALL)


def has_magic(pattern: str) -> bool:
    """Whether ``pattern`` contains glob syntax (``*``, ``?`` or ``[``)."""
    return any(ch in pattern for ch in "*?[")


@dataclass(frozen=True)
class _Rule:
    text: str
    regex: re.Pattern[str]
    exception: bool
    segments: tuple[str, ...]

    def matches(self, relpath: str) -> bool:
        """Match the path itself or any of its parent directories."""
        if self.regex.match(relpath):
            return True
        parts = relpath.split("/")
        return any(self.regex.match("/".join(parts[:k])) for k in range(1, len(parts)))

    def may_match_below(self, dirpath: str) -> bool:
        """Whether this rule could match some path strictly inside directory ``dirpath``."""
        dir_parts = [] if dirpath == "." else dirpath.split("/")
        for k, part in enumerate(dir_parts):
            if k >= len(self.segments):
                return False
            segment = self.segments[k]
            if "**" in segment:
                return True
            try:
                if not compile_pattern(segment).match(part):
                    return False
            except ValueError:  # a class holding "/" split in two: assume it may match
                return True
        return len(self.segments) > len(dir_parts)


class IgnoreRules:
    """An ordered list of ignore patterns; the last matching rule decides."""

    def __init__(self, rules: list[_Rule], source: str = "") -> None:
        self._rules = rules
        self.source = source

    @classmethod
    def from_patterns(cls, patterns: Iterable[str], source: str = "patterns") -> IgnoreRules:
        """Build rules from lines in ignore-file syntax; ``source`` names them in error messages."""
        rules: list[_Rule] = []
        for lineno, raw in enumerate(patterns, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            if exception:
                line = line[1:].strip()
                if not line:
                    raise UsageError(f"{source}:{lineno}: '!' must be followed by a pattern")
            text = clean_path(line)
            try:
                regex = compile_pattern(text)
            except ValueError as exc:
                raise UsageError(f"{source}:{lineno}: bad pattern {raw.strip()!r}: {exc}") from None
            rules.append(_Rule(text, regex, exception, tuple(text.split("/"))))
        return cls(rules, source)

    @classmethod
    def load(cls, context_dir: Path) -> IgnoreRules:
        """Read ``.ggufpackerignore`` (or ``.dockerignore``) from the context root; none means no rules."""
        for name in IGNORE_FILES:
            path = Path(context_dir) / name
            if path.is_file():
                return cls.from_patterns(path.read_text(encoding="utf-8").splitlines(), source=str(path))
        return cls([], "")

    def __bool__(self) -> bool:
        return bool(self._rules)

    @property
    def patterns(self) -> list[str]:
        """The cleaned patterns in order, exceptions prefixed with ``!``."""
        return [("!" if r.exception else "") + r.text for r in self._rules]

    def is_excluded(self, relpath: str) -> bool:
        """Whether the context-relative ``relpath`` is ignored."""
        path = clean_path(relpath)
        if path == ".":
            return False
        excluded = False
        for rule in self._rules:
            # Only a rule that could flip the current verdict needs evaluating.
            if rule.exception == excluded and rule.matches(path):
                excluded = not rule.exception
        return excluded

    def may_reinclude_below(self, dirpath: str) -> bool:
        """Whether an exception rule could re-include something inside the excluded ``dirpath``."""
        path = clean_path(dirpath)
        return any(rule.exception and rule.may_match_below(path) for rule in self._rules)
