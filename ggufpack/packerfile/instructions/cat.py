"""``CAT <<EOF [<<EOF2 ...] [text ...] <dest>``: write a file from heredocs and words (a system prompt)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Instruction, LayerCommand, need_args
from .expansion import Expansion
from .flags import CHMOD, CHOWN, Flags, chown_chmod


@dataclass(frozen=True)
class CatCommand(LayerCommand):
    keyword: ClassVar[str] = "CAT"
    content: str
    dest: str
    chown: str | None
    chmod: str | None

    def arguments(self) -> dict[str, Any]:
        return {"content": self.content, "dest": self.dest, "chown": self.chown, "chmod": self.chmod}


def parse_cat(ex: Expansion, flags: Flags) -> CatCommand:
    """Heredocs and words are concatenated in order (words joined by a space)."""
    node = ex.node
    if node.json_args is not None:
        raise ex.error("CAT takes heredocs, not a JSON array: CAT <<EOF <dest>")
    need_args(ex, 2, "content and a destination: CAT <<EOF <dest>")
    *content_words, dest_word = node.words
    if dest_word.text.startswith("<<"):
        raise ex.error("CAT: a heredoc cannot be the destination", dest_word.position)
    heredocs = {h.position: h for h in node.heredocs}
    parts: list[str] = []
    words: list[str] = []
    for word in content_words:
        heredoc = heredocs.get(word.position)
        if heredoc is None:
            words.append(ex.word(word))
            continue
        if words:
            parts.append(" ".join(words))
            words = []
        parts.append(ex.heredoc(heredoc))
    if words:
        parts.append(" ".join(words))
    dest = ex.word(dest_word)
    if not dest:
        raise ex.error("CAT has an empty destination", dest_word.position)
    chown, chmod = chown_chmod(ex, flags)
    return CatCommand(node.position, node.original, "".join(parts), dest, chown, chmod)


CAT = Instruction(
    "CAT", "write a file from heredocs and words (a system prompt, a chat template)",
    "CAT [flags] <<EOF [<<EOF2 ...] [text ...] <dest>", CatCommand, parse_cat, op="files:CatOp", heredocs=True,
    flags=(CHOWN, CHMOD),
    examples=("CAT <<EOF /system-prompt.txt\nYou are a helpful assistant.\nEOF",),
)
