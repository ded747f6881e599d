"""``LABEL <key>=<value> ...``: labels of the image (and annotations of its manifest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Command, Instruction, need_args
from .expansion import Expansion
from .flags import Flags


@dataclass(frozen=True)
class LabelCommand(Command):
    keyword: ClassVar[str] = "LABEL"
    labels: tuple[tuple[str, str], ...]

    def arguments(self) -> dict[str, Any]:
        return {"labels": dict(self.labels)}


def _split_label_word(text: str, escape: str) -> int:
    """Offset of the first ``=`` outside quotes in a raw LABEL word, or -1."""
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == escape and quote != "'":
            i += 2
            continue
        if quote is None and ch in "'\"":
            quote = ch
        elif ch == quote:
            quote = None
        elif ch == "=" and quote is None:
            return i
        i += 1
    return -1


def parse_label(ex: Expansion, flags: Flags) -> LabelCommand:
    node = ex.node
    need_args(ex, 1, "at least one key=value pair")
    labels: list[tuple[str, str]] = []
    first = node.words[0]
    if _split_label_word(first.text, ex.parsed.escape) < 0:
        # Legacy form 'LABEL key value with spaces': one label, the rest of the line is its value.
        if len(node.words) < 2:
            raise ex.error("LABEL needs key=value pairs", first.position)
        key = ex.word(first)
        rest_offset = node.words[1].offset
        value = ex.text(node.rest[rest_offset - node.rest_offset :], rest_offset)
        labels.append((key, value))
    else:
        for word in node.words:
            eq = _split_label_word(word.text, ex.parsed.escape)
            if eq < 0:
                raise ex.error(f"LABEL expects key=value, got {word.text!r}", word.position)
            key = ex.text(word.text[:eq], word.offset)
            if not key:
                raise ex.error("LABEL has an empty key", word.position)
            labels.append((key, ex.text(word.text[eq + 1 :], word.offset + eq + 1)))
    return LabelCommand(node.position, node.original, tuple(labels))


LABEL = Instruction(
    "LABEL", "set labels of the image; they override the gguf.model.* labels read from the model",
    "LABEL <key>=<value> ...", LabelCommand, parse_label, op="config:LabelOp",
    examples=('LABEL org.opencontainers.image.title="Tiny llama" org.opencontainers.image.licenses=MIT',),
)
