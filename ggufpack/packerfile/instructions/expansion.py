"""Expanding the words of one node in one scope, with errors that point into the source."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable

from ...errors import PackerfileError, SourcePosition
from ..expand import ExpansionBudget, Scope, expand
from ..lexer import Flag, Heredoc, Node, ParsedText, Word, json_raw_offset


class Expansion:
    """Expands the words of one node in one scope; builds errors that point into the source.

    ``budget`` bounds what variable values add to the whole Packerfile: the planner passes one
    per plan (see :class:`ExpansionBudget`).
    """

    def __init__(self, parsed: ParsedText, node: Node, scope: Scope, budget: ExpansionBudget | None = None) -> None:
        self.parsed = parsed
        self.node = node
        self.scope = scope
        self.budget = budget if budget is not None else ExpansionBudget()

    def error(self, message: str, position: SourcePosition | None = None) -> PackerfileError:
        return self.parsed.error(message, position or self.node.position)

    def _expand(self, text: str, base_offset: int, scope: Scope | None, heredoc: bool = False) -> str:
        node = self.node
        return expand(
            text, scope, escape=self.parsed.escape, heredoc=heredoc,
            locate=lambda off: node.position_at(base_offset + off), source_line=self.parsed.source_line,
            budget=self.budget,
        )

    def json_args(self) -> list[str]:
        """The JSON form's elements, expanded. Each is expanded as heredoc-like text (quotes inside it
        stay literal: JSON already delimits it); errors point into the element through JSON escapes."""
        node = self.node
        assert node.json_args is not None
        quotes = node.json_offsets or []
        rest = node.rest

        def locator(index: int) -> Callable[[int], SourcePosition]:
            if index >= len(quotes):
                return lambda _off: node.position_at(node.rest_offset)
            quote = quotes[index] - node.rest_offset
            return lambda off: node.position_at(node.rest_offset + json_raw_offset(rest, quote, off))

        return [
            expand(value, self.scope, escape=self.parsed.escape, heredoc=True, locate=locator(index),
                   source_line=self.parsed.source_line, budget=self.budget)
            for index, value in enumerate(node.json_args)
        ]

    def arguments(self) -> list[str]:
        """The arguments after the flags, expanded: the JSON form's elements or the words."""
        return self.json_args() if self.node.json_args is not None else [self.word(w) for w in self.node.words]

    def declare(self, name: str, default: str | None) -> None:
        """Declare an ARG in the scope this node stands in (a later default, or word, can use it)."""
        if self.scope.declare is None:
            raise AssertionError(f"{self.node.keyword} at {self.node.position}: this scope takes no declarations")
        self.scope.declare(name, default)

    def word(self, word: Word) -> str:
        return self._expand(word.text, word.offset, self.scope)

    def text(self, text: str, offset: int) -> str:
        return self._expand(text, offset, self.scope)

    def flag(self, flag: Flag) -> str:
        assert flag.value is not None
        return self._expand(flag.value, flag.value_offset, self.scope)

    def heredoc(self, heredoc: Heredoc) -> str:
        """A heredoc body, expanded unless its delimiter was quoted."""
        if not heredoc.expand:
            return heredoc.body
        lines = heredoc.body.split("\n")
        starts = [0]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line) + 1)

        def locate(offset: int) -> SourcePosition:
            index = max(bisect_right(starts, offset) - 1, 0)
            indent = heredoc.indents[index] if index < len(heredoc.indents) else 0
            return SourcePosition(
                self.parsed.file, heredoc.body_line + index, offset - starts[index] + 1 + indent
            )

        return expand(
            heredoc.body, self.scope, escape=self.parsed.escape, heredoc=True, locate=locate,
            source_line=self.parsed.source_line, budget=self.budget,
        )
