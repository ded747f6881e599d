"""What ADD and COPY share: sources (paths or heredocs) and a destination, and the file flags."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import LayerCommand, need_args
from .expansion import Expansion
from .flags import BOOL, CHMOD, CHOWN, LIST, Flags, FlagSpec, chown_chmod

USAGE = "at least one source and a destination"
#: the flags of every file-writing instruction (ADD, COPY)
FILE_FLAGS = (
    CHOWN, CHMOD,
    FlagSpec("link", "accepted for Dockerfile compatibility: every layer is independent already", BOOL, False),
    FlagSpec("exclude", "leave out the sources matching this .dockerignore-style pattern (repeatable)", LIST, (),
             "pattern"),
)


@dataclass(frozen=True)
class InlineContent:
    """A file written from text in the Packerfile (a heredoc)."""

    name: str
    data: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "data": self.data}


@dataclass(frozen=True)
class FileCommand(LayerCommand):
    """Shared shape of ADD and COPY: sources, inline heredoc files, destination and file flags."""

    sources: tuple[str, ...]
    contents: tuple[InlineContent, ...]
    dest: str
    chown: str | None
    chmod: str | None
    link: bool
    excludes: tuple[str, ...]

    def _file_arguments(self) -> dict[str, Any]:
        return {
            "sources": list(self.sources), "contents": [c.to_json() for c in self.contents],
            "dest": self.dest, "chown": self.chown, "chmod": self.chmod, "link": self.link,
            "exclude": list(self.excludes),
        }


def file_arguments(ex: Expansion, flags: Flags) -> tuple[Any, ...]:
    """The fields every :class:`FileCommand` starts with (after its position and text), checked: the
    source paths, the heredoc contents, the destination and the file flags."""
    sources, contents, dest = _sources_and_dest(ex)
    chown, chmod = chown_chmod(ex, flags)
    return (tuple(sources), tuple(contents), dest, chown, chmod, flags.boolean("link"),
            tuple(flags.strings("exclude")))


def _sources_and_dest(ex: Expansion) -> tuple[list[str], list[InlineContent], str]:
    node = ex.node
    if node.json_args is not None:
        if len(node.json_args) < 2:
            raise ex.error(f"{node.keyword} needs {USAGE}")
        values = ex.json_args()
        for index, value in enumerate(values):
            if not value:
                where = "destination" if index == len(values) - 1 else "source path"
                quotes = node.json_offsets or []
                position = node.position_at(quotes[index]) if index < len(quotes) else None
                raise ex.error(f"{node.keyword} has an empty {where}", position)
        return values[:-1], [], values[-1]
    need_args(ex, 2, USAGE)
    *source_words, dest_word = node.words
    if dest_word.text.startswith("<<"):
        raise ex.error(f"{node.keyword}: a heredoc cannot be the destination", dest_word.position)
    heredocs = {h.position: h for h in node.heredocs}
    sources: list[str] = []
    contents: list[InlineContent] = []
    for word in source_words:
        heredoc = heredocs.get(word.position)
        if heredoc is not None:
            contents.append(InlineContent(heredoc.name, ex.heredoc(heredoc)))
            continue
        value = ex.word(word)
        if not value:
            raise ex.error(f"{node.keyword} has an empty source path", word.position)
        sources.append(value)
    dest = ex.word(dest_word)
    if not dest:
        raise ex.error(f"{node.keyword} has an empty destination", dest_word.position)
    return sources, contents, dest
