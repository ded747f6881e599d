"""Variable expansion and quote removal for Packerfile words.

Forms: ``$V``, ``${V}``, ``${V:-word}``, ``${V-word}``, ``${V:+word}``, ``${V+word}``,
``${V:?message}``, ``${V?message}``; single quotes suppress expansion, double quotes keep
whitespace, the escape character (``\\`` or the ``# escape=`` one) makes the next character literal.

Unlike Docker, a variable that no ARG declares is an error naming it (Docker silently expands it to
nothing, and an empty path or type is never what a user meant), except inside a form that gives a
default or alternative (``:-``, ``-``, ``:+``, ``+``) or an explicit message (``:?``, ``?``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass

from ..errors import PackerfileError, SourcePosition, UsageError, printable

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":+", ":?", "-", "+", "?")
#: how deeply ``${V:-${W:-...}}`` may nest (far beyond any real use; keeps clear of the recursion limit)
MAX_NESTING = 32
#: the most characters variable values may add to one word, flag value, JSON element or heredoc body
MAX_EXPANDED_CHARS = 4 << 20
#: the most characters variable values may add to one Packerfile in all (ARGs doubling each other reach
#: gigabytes in a few dozen lines; a real Packerfile adds kilobytes). Literal text is not counted: it is
#: bounded by the size of the file.
MAX_TOTAL_EXPANDED_CHARS = 32 << 20
#: the longest variable name accepted from outside the Packerfile
MAX_NAME_CHARS = 1024


def _mib(chars: int) -> str:
    return f"{chars / (1 << 20):g} Mi characters"


class ExpansionBudget:
    """What variable values may still add to one plan: :data:`MAX_TOTAL_EXPANDED_CHARS`, shared by its words."""

    def __init__(self, total: int = MAX_TOTAL_EXPANDED_CHARS, per_expansion: int = MAX_EXPANDED_CHARS) -> None:
        self.total = total
        self.per_expansion = per_expansion
        self.used = 0

    def limit(self) -> int:
        """The most values may add to one more expansion."""
        return min(self.per_expansion, self.total - self.used)

    def overflow(self, limit: int) -> str:
        """The message for an expansion that went past ``limit``."""
        if limit < self.per_expansion:
            return (f"variable values make the Packerfile's expansions longer than {_mib(self.total)} in all: "
                    "do ARGs double each other?")
        return (f"variable values make this longer than {_mib(self.per_expansion)} (the limit for one word, flag, "
                "JSON element or heredoc): do ARGs double each other?")


def check_values(values: Mapping[str, str], what: str) -> None:
    """Refuse values from outside the Packerfile (``--build-arg``) no expansion could use: too long to
    expand, or holding a NUL (no path or argument can)."""
    for name, value in values.items():
        shown = printable(name, 64)
        if len(name) > MAX_NAME_CHARS:
            raise UsageError(f"{what} {shown}: the name has {len(name)} characters, more than {MAX_NAME_CHARS}")
        if len(value) > MAX_EXPANDED_CHARS:
            raise UsageError(f"{what} {shown}: the value has {len(value)} characters, more than "
                             f"{_mib(MAX_EXPANDED_CHARS)}")
        if "\x00" in value or "\x00" in name:
            raise UsageError(f"{what} {shown}: a NUL character is never part of a value")


@dataclass(frozen=True)
class Scope:
    """The variables visible at one point: declared names, and the values of those that have one."""

    values: Mapping[str, str]
    declared: Container[str]
    #: how an ARG written here declares a variable (name, default): the planner's global or stage scope
    declare: Callable[[str, str | None], None] | None = None


class _Expander:
    def __init__(
        self, text: str, scope: Scope | None, escape: str, locate: Callable[[int], SourcePosition],
        source_line: Callable[[int], str | None], heredoc: bool, budget: ExpansionBudget,
    ) -> None:
        self.text = text
        self.scope = scope
        self.escape = escape
        self.locate = locate
        self.source_line = source_line
        self.heredoc = heredoc
        self.i = 0
        self.depth = 0
        #: characters that variable values have added so far (a nested default counts again where it is
        #: used, which only makes the check stricter)
        self.added = 0
        self.budget = budget
        self.limit = budget.limit()

    def error(self, message: str, offset: int) -> PackerfileError:
        position = self.locate(offset)
        return PackerfileError(message, position, self.source_line(position.line))

    def run(self, stop: str = "") -> str:
        """Process until end of text or an unquoted character in ``stop`` (used inside ``${...}``)."""
        out: list[str] = []
        text, esc = self.text, self.escape
        while self.i < len(text):
            ch = text[self.i]
            if ch in stop:
                break
            if ch == esc and self.i + 1 < len(text):
                nxt = text[self.i + 1]
                if self.heredoc and nxt not in ("$", esc):
                    out.append(ch)  # in a heredoc body only \$ and \\ are escapes, as in a shell
                    self.i += 1
                    continue
                out.append(nxt)
                self.i += 2
            elif ch == "$" and self.scope is not None:
                out.append(self.variable())
            elif ch == "'" and not self.heredoc:
                out.append(self.single_quoted())
            elif ch == '"' and not self.heredoc:
                out.append(self.double_quoted())
            else:
                out.append(ch)
                self.i += 1
        return "".join(out)

    def single_quoted(self) -> str:
        start = self.i
        end = self.text.find("'", start + 1)
        if end < 0:
            raise self.error("unterminated single quote", start)
        self.i = end + 1
        return self.text[start + 1 : end]

    def double_quoted(self) -> str:
        start = self.i
        self.i += 1
        out: list[str] = []
        text, esc = self.text, self.escape
        while self.i < len(text):
            ch = text[self.i]
            if ch == '"':
                self.i += 1
                return "".join(out)
            if ch == esc and self.i + 1 < len(text) and text[self.i + 1] in ('"', esc, "$"):
                out.append(text[self.i + 1])
                self.i += 2
            elif ch == "$" and self.scope is not None:
                out.append(self.variable())
            else:
                out.append(ch)
                self.i += 1
        raise self.error("unterminated double quote", start)

    def lookup(self, name: str, offset: int, operator: str | None, word: str | None) -> str:
        assert self.scope is not None
        is_set = name in self.scope.values
        value = self.scope.values.get(name, "")
        if operator is None:
            if name not in self.scope.declared:
                raise self.error(
                    f"variable {name!r} is not declared: add 'ARG {name}=<value>' before its use, pass "
                    f"--build-arg {name}=<value> with an ARG, or write ${{{name}:-default}}",
                    offset,
                )
            return value
        assert word is not None
        if operator == ":-":
            return value if value else word
        if operator == "-":
            return value if is_set else word
        if operator == ":+":
            return word if value else ""
        if operator == "+":
            return word if is_set else ""
        if (operator == ":?" and not value) or (operator == "?" and not is_set):
            raise self.error(word or f"variable {name!r} is required", offset)
        return value

    def variable(self) -> str:
        start = self.i
        text = self.text
        self.i += 1
        if self.i < len(text) and text[self.i] == "{":
            self.i += 1
            match = _NAME_RE.match(text, self.i)
            if not match:
                raise self.error("bad variable substitution: expected a name after '${'", start)
            name = match.group(0)
            self.i = match.end()
            operator = next((op for op in _OPERATORS if text.startswith(op, self.i)), None)
            word: str | None = None
            if operator is not None:
                self.i += len(operator)
                self.depth += 1
                if self.depth > MAX_NESTING:
                    raise self.error(f"variable substitutions nested more than {MAX_NESTING} deep", start)
                word = self.run(stop="}")
                self.depth -= 1
            if self.i >= len(text) or text[self.i] != "}":
                raise self.error("bad variable substitution: missing '}'", start)
            self.i += 1
            return self.counted(self.lookup(name, start, operator, word), start)
        match = _NAME_RE.match(text, self.i)
        if not match:
            return "$"  # a lone '$' is literal, as in Docker
        self.i = match.end()
        return self.counted(self.lookup(match.group(0), start, None, None), start)

    def counted(self, value: str, offset: int) -> str:
        """``value``, once it is known to keep the expansion within its limit (else an error at ``offset``)."""
        self.added += len(value)
        if self.added > self.limit:
            raise self.error(self.budget.overflow(self.limit), offset)
        return value


def expand(
    text: str, scope: Scope | None, *, escape: str, locate: Callable[[int], SourcePosition],
    source_line: Callable[[int], str | None], heredoc: bool = False, budget: ExpansionBudget | None = None,
) -> str:
    """Expand variables in ``text`` and remove its quotes.

    ``scope=None`` removes quotes and escapes without expanding (quoted heredoc delimiters);
    ``heredoc=True`` treats quotes as literal characters, as a shell does inside a here-document.
    ``locate`` turns an offset in ``text`` into a source position for error messages. Variable values
    may add at most :data:`MAX_EXPANDED_CHARS` to the text; what they add is charged to ``budget``
    (one per plan; a fresh one when None).
    """
    if escape not in text and "$" not in text and (heredoc or ("'" not in text and '"' not in text)):
        return text  # fast path: nothing to expand or remove
    budget = budget if budget is not None else ExpansionBudget()
    expander = _Expander(text, scope, escape, locate, source_line, heredoc, budget)
    result = expander.run()
    budget.used += expander.added
    return result
