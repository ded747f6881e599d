"""Packerfile text → generic nodes with source positions.

This layer knows the *syntax* shared by every instruction (directives, comments, line
continuations, flags, JSON arrays, heredocs, words) and nothing of what an instruction means.
It mirrors BuildKit's ``parser`` package: instruction semantics live in the ``instructions`` package.

Positions: a logical line may span several physical lines (continuations), so every word keeps
the physical line and column where it starts; errors point there.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from dataclasses import dataclass, field

from ..errors import PackerfileError, SourcePosition, UsageError

DEFAULT_ESCAPE = "\\"
#: the largest Packerfile: a real one, heredoc prompts included, holds kilobytes, and lexing and planning
#: cost up to ~150 bytes of memory per byte of a file made of tiny instructions or words
MAX_PACKERFILE_BYTES = 1 << 20
_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_RE = re.compile(r"^<<(-?)(.+)$")
_HEREDOC_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_KEYWORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
#: instructions whose arguments may open heredocs (as BuildKit's parser knows them); their definitions
#: say so too (``Instruction.heredocs``), and a test keeps the two equal
HEREDOC_INSTRUCTIONS = frozenset({"ADD", "COPY", "CAT"})


@dataclass(frozen=True)
class Word:
    """One whitespace-separated argument, still raw: quotes and ``$`` are processed on expansion."""

    text: str
    position: SourcePosition
    #: offset of the word inside its node's logical line, to locate characters inside it
    offset: int


@dataclass(frozen=True)
class Flag:
    """A ``--name[=value]`` flag written before an instruction's arguments."""

    name: str
    value: str | None
    position: SourcePosition
    #: position of the first character of the value (after ``=``)
    value_position: SourcePosition
    value_offset: int


@dataclass(frozen=True)
class Heredoc:
    """A here-document opened by ``<<NAME`` / ``<<-NAME`` / ``<<"NAME"``."""

    name: str
    body: str
    chomp: bool
    expand: bool
    #: where ``<<NAME`` is written
    position: SourcePosition
    #: line number of the first body line (body lines are consecutive)
    body_line: int
    #: tabs stripped from each body line by ``<<-`` (to point errors at the right column)
    indents: tuple[int, ...] = ()


@dataclass
class Node:
    """One instruction as written: keyword, flags, arguments (words or a JSON array), heredocs."""

    keyword: str
    position: SourcePosition
    end_line: int
    original: str
    flags: list[Flag]
    words: list[Word]
    json_args: list[str] | None
    #: raw argument text after the flags (for LABEL's legacy form and messages)
    rest: str
    rest_offset: int
    heredocs: list[Heredoc] = field(default_factory=list)
    #: maps a logical-line offset to a physical position
    line_map: _LineMap | None = None
    #: logical-line offset of a quote or ``${`` that the arguments leave open (an error on use)
    open_at: int | None = None
    #: which was left open at ``open_at``: ``'``, ``"`` or ``$``
    open_char: str = ""
    #: logical-line offsets of the opening quotes of the JSON form's elements
    json_offsets: list[int] | None = None

    def position_at(self, offset: int) -> SourcePosition:
        """The physical position of a character of the logical line."""
        assert self.line_map is not None
        return self.line_map.position(offset)


@dataclass
class ParsedText:
    """The result of lexing a whole file."""

    file: str
    lines: list[str]
    directives: dict[str, str]
    escape: str
    nodes: list[Node]

    def source_line(self, line: int) -> str | None:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else None

    def error(self, message: str, position: SourcePosition) -> PackerfileError:
        return PackerfileError(message, position, self.source_line(position.line))


class _LineMap:
    """Offsets of a logical line mapped back to (line, column) of the physical text."""

    def __init__(self, file: str) -> None:
        self.file = file
        self._starts: list[int] = []
        self._origins: list[tuple[int, int]] = []

    def add(self, logical_offset: int, line: int, column: int) -> None:
        self._starts.append(logical_offset)
        self._origins.append((line, column))

    def position(self, offset: int) -> SourcePosition:
        i = 0 if len(self._starts) == 1 else max(bisect_right(self._starts, offset) - 1, 0)
        line, column = self._origins[i]
        return SourcePosition(self.file, line, column + offset - self._starts[i])


def _error(file: str, lines: list[str], message: str, line: int, column: int = 1) -> PackerfileError:
    source = lines[line - 1] if 0 < line <= len(lines) else None
    return PackerfileError(message, SourcePosition(file, line, column), source)


def _parse_directives(file: str, lines: list[str]) -> tuple[dict[str, str], int]:
    """Read ``# name=value`` directives at the top; return them and the first line after them."""
    directives: dict[str, str] = {}
    index = 0
    while index < len(lines):
        match = _DIRECTIVE_RE.match(lines[index])
        if not match:
            break
        name = match.group(1).lower()
        if name not in KNOWN_DIRECTIVES:
            break  # an unknown directive is a comment, and comments end the directive block
        if name in directives:
            raise _error(file, lines, f"only one {name} parser directive can be used", index + 1)
        value = match.group(2)
        if name == "escape" and value not in ("\\", "`"):
            column = lines[index].index("=") + 2
            raise _error(
                file, lines, f"invalid escape token {value!r}: the escape directive takes \\ or `", index + 1,
                column,
            )
        directives[name] = value
        index += 1
    return directives, index


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _ends_with_escape(line: str, escape: str) -> bool:
    """True when the (right-stripped) line ends with an unescaped escape character."""
    stripped = line.rstrip()
    if not stripped.endswith(escape):
        return False
    run = len(stripped) - len(stripped.rstrip(escape))
    return run % 2 == 1


def split_words(text: str, escape: str) -> list[tuple[str, int]]:
    """Split on whitespace outside quotes and ``${...}``; return (raw word, offset) pairs.

    Quotes and escapes stay in the word: expansion removes them later, as BuildKit's shell lexer does.
    An unterminated quote runs to the end of the text (see :func:`scan_words`).
    """
    return scan_words(text, escape)[0]


_PLAIN_WORD_RE = re.compile(r"\S+")


def scan_words(text: str, escape: str) -> tuple[list[tuple[str, int]], int | None]:
    """:func:`split_words`, plus the offset of a quote or ``${`` left open at the end of the text.

    Whitespace inside ``${...}`` does not split a word (``${V:-a b}`` is one word), as in a shell.
    The character at the returned offset tells which was left open: ``'``, ``"`` or ``$``.
    """
    if escape not in text and "'" not in text and '"' not in text and "$" not in text:
        # fast path (most lines): nothing can join words across whitespace
        return [(m.group(), m.start()) for m in _PLAIN_WORD_RE.finditer(text)], None
    words: list[tuple[str, int]] = []
    open_quote: int | None = None
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        start = i
        quote: str | None = None
        quote_at = brace_at = 0
        braces = 0
        while i < n:
            ch = text[i]
            if quote is None and braces == 0 and ch.isspace():
                break
            if ch == escape and quote != "'" and i + 1 < n:
                i += 2
                continue
            if quote is None and ch in "'\"":
                quote, quote_at = ch, i
            elif ch == quote:
                quote = None
            elif quote is None and ch == "$" and text.startswith("{", i + 1):
                # inside quotes a ${...} needs no tracking: the quotes already keep the word whole
                if braces == 0:
                    brace_at = i
                braces += 1
                i += 2
                continue
            elif quote is None and braces and ch == "}":
                braces -= 1
            i += 1
        if quote is not None:
            open_quote = quote_at
        elif braces:
            open_quote = brace_at
        words.append((text[start:i], start))
    return words, open_quote


def json_string_offsets(text: str) -> list[int]:
    """Offsets of the opening quotes of the elements of a JSON array of strings.

    ``text`` must already be known to parse as such an array (see :func:`_json_array`).
    """
    offsets: list[int] = []
    i = text.index("[") + 1
    while True:
        i = text.find('"', i)
        if i < 0:
            return offsets
        offsets.append(i)
        i += 1
        while text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        i += 1


def json_raw_offset(text: str, quote: int, index: int) -> int:
    """The offset in ``text`` of character ``index`` of the decoded JSON string opening at ``quote``."""
    i = quote + 1
    for _ in range(index):
        if text[i] == "\\":
            i += 6 if text[i + 1] == "u" else 2
        else:
            i += 1
    return i


def _parse_heredoc_marker(word: str) -> tuple[str, bool, bool] | None:
    """``<<[-]NAME`` → (name, chomp, expand); None when the word is not a heredoc marker."""
    match = _HEREDOC_RE.match(word)
    if not match:
        return None
    chomp, raw = match.group(1) == "-", match.group(2)
    expand = True
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        raw, expand = raw[1:-1], False
    if not _HEREDOC_NAME_RE.match(raw):
        return None
    return raw, chomp, expand


class _Lexer:
    def __init__(self, text: str, file: str) -> None:
        self.file = file
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        # Tolerate CRLF files: a trailing CR is line-ending noise, not content.
        self.lines = [line[:-1] if line.endswith("\r") else line for line in self.lines]
        self.directives, self.index = _parse_directives(file, self.lines)
        self.escape = self.directives.get("escape", DEFAULT_ESCAPE)

    def error(self, message: str, line: int, column: int = 1) -> PackerfileError:
        return _error(self.file, self.lines, message, line, column)

    def run(self) -> ParsedText:
        nodes: list[Node] = []
        while self.index < len(self.lines):
            line = self.lines[self.index]
            if not line.strip() or _is_comment(line):
                self.index += 1
                continue
            node = self._node()
            if node is not None:
                nodes.append(node)
        return ParsedText(self.file, self.lines, self.directives, self.escape, nodes)

    def _logical_line(self) -> tuple[str, _LineMap, int, int]:
        """Join continuation lines; return text, offset map, first and last physical line."""
        line_map = _LineMap(self.file)
        parts: list[str] = []
        offset = 0
        first = self.index + 1
        last = first
        while self.index < len(self.lines):
            raw = self.lines[self.index]
            line_no = self.index + 1
            self.index += 1
            if parts and (_is_comment(raw) or not raw.strip()):
                continue  # comments and blank lines inside a continuation are skipped
            last = line_no
            if _ends_with_escape(raw, self.escape):
                body = raw.rstrip()[:-1]
                line_map.add(offset, line_no, 1)
                parts.append(body)
                offset += len(body)
                continue
            line_map.add(offset, line_no, 1)
            parts.append(raw)
            break
        return "".join(parts), line_map, first, last

    def _node(self) -> Node | None:
        """The next instruction; None when the logical line holds nothing (a lone continuation)."""
        text, line_map, first, last = self._logical_line()
        if not text.strip():
            return None
        lead = len(text) - len(text.lstrip())
        match = _KEYWORD_RE.match(text, lead)
        position = line_map.position(lead)
        if not match or (match.end() < len(text) and not text[match.end()].isspace()):
            token = text[lead:].split(None, 1)[0]
            raise PackerfileError(
                f"expected an instruction, found {token!r}", position, self.lines[position.line - 1]
            )
        keyword = match.group(0).upper()
        args_start = match.end()
        while args_start < len(text) and text[args_start].isspace():
            args_start += 1
        args = text[args_start:].rstrip()
        # one scan serves the flags and the words after them: word boundaries do not depend on the flags
        scanned, open_rel = scan_words(args, self.escape)
        open_at = args_start + open_rel if open_rel is not None else None
        flags, first_word = self._flags(scanned, args_start, line_map)
        rest_offset = args_start + (scanned[first_word][1] if first_word < len(scanned) else len(args))
        rest = text[rest_offset:].rstrip()
        json_args = _json_array(rest)
        words = [
            Word(word, line_map.position(args_start + off), args_start + off) for word, off in scanned[first_word:]
        ]
        original_lines = self.lines[first - 1 : last]
        node = Node(
            keyword=keyword, position=position, end_line=last, original="\n".join(original_lines),
            flags=flags, words=words, json_args=json_args, rest=rest, rest_offset=rest_offset,
            line_map=line_map, open_at=open_at, open_char=text[open_at] if open_at is not None else "",
            json_offsets=[rest_offset + off for off in json_string_offsets(rest)] if json_args is not None else None,
        )
        if keyword in HEREDOC_INSTRUCTIONS and json_args is None:
            node.heredocs = self._heredocs(words)
            if node.heredocs:
                node.end_line = self.index
                node.original = "\n".join(self.lines[first - 1 : self.index])
        return node

    def _flags(self, scanned: list[tuple[str, int]], start: int, line_map: _LineMap) -> tuple[list[Flag], int]:
        """The leading ``--flags`` among the scanned words (offsets from ``start``); the index of the
        first argument word after them (past a ``--`` that ends the flags)."""
        flags: list[Flag] = []
        index = 0
        for word, off in scanned:
            if not word.startswith("--"):
                break
            index += 1
            if word == "--":
                break
            name, eq, value = word[2:].partition("=")
            value_offset = start + off + 2 + len(name) + 1
            flags.append(
                Flag(
                    name=name, value=value if eq else None, position=line_map.position(start + off),
                    value_position=line_map.position(value_offset if eq else start + off),
                    value_offset=value_offset,
                )
            )
        return flags, index

    def _heredocs(self, words: list[Word]) -> list[Heredoc]:
        heredocs: list[Heredoc] = []
        for word in words:
            marker = _parse_heredoc_marker(word.text)
            if marker is None:
                continue
            name, chomp, expand = marker
            body_line = self.index + 1
            body: list[str] = []
            indents: list[int] = []
            while True:
                if self.index >= len(self.lines):
                    raise PackerfileError(
                        f"unterminated heredoc: no line {name!r} closes it before the end of the file",
                        word.position, self.lines[word.position.line - 1],
                    )
                raw = self.lines[self.index]
                self.index += 1
                check = raw.lstrip("\t") if chomp else raw
                if check == name:
                    break
                body.append(check if chomp else raw)
                indents.append(len(raw) - len(check))
            heredocs.append(
                Heredoc(
                    name=name, body="".join(line + "\n" for line in body), chomp=chomp, expand=expand,
                    position=word.position, body_line=body_line, indents=tuple(indents),
                )
            )
        return heredocs


def _json_array(text: str) -> list[str] | None:
    """The JSON exec form: an array of strings, else None (then the arguments are shell form)."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # deeply nested brackets exhaust the decoder's recursion
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _check_no_nul(text: str, file: str) -> None:
    """A NUL byte is never text (and no path may hold one): refuse it where it stands."""
    at = text.find("\x00")
    if at < 0:
        return
    line_start = text.rfind("\n", 0, at) + 1
    line_end = text.find("\n", at)
    source = text[line_start : line_end if line_end >= 0 else len(text)]
    position = SourcePosition(file, text.count("\n", 0, at) + 1, at - line_start + 1)
    raise PackerfileError("a NUL byte: a Packerfile is text (is this a binary file?)", position, source)


def too_big(file: str) -> UsageError:
    return UsageError(f"{file}: the Packerfile is larger than {MAX_PACKERFILE_BYTES >> 20} MiB; is it the right "
                      "file? (put big content in a file of the context and COPY it)")


def lex(text: str, file: str) -> ParsedText:
    """Lex a whole Packerfile. Raises :class:`PackerfileError` on a syntax error."""
    if len(text) > MAX_PACKERFILE_BYTES:
        raise too_big(file)
    _check_no_nul(text, file)
    return _Lexer(text, file).run()
