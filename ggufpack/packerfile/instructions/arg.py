"""``ARG <name>[=<default>] ...``: a build variable (before the first FROM: visible in every stage)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Command, Instruction, need_args
from .expansion import Expansion
from .flags import Flags

_ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ArgCommand(Command):
    keyword: ClassVar[str] = "ARG"
    #: (name, default or None); defaults are expanded where the ARG stands
    args: tuple[tuple[str, str | None], ...]

    def arguments(self) -> dict[str, Any]:
        return {"args": [{"name": name, "default": default} for name, default in self.args]}


def parse_arg(ex: Expansion, flags: Flags) -> ArgCommand:
    """Each ARG is declared in the node's scope as soon as it is read, so a later default can use it."""
    node = ex.node
    need_args(ex, 1, "a name: ARG <name>[=<default>]")
    pairs: list[tuple[str, str | None]] = []
    for word in node.words:
        name, eq, _ = word.text.partition("=")
        if not _ARG_NAME_RE.match(name):
            raise ex.error(f"invalid ARG name {name!r}", word.position)
        default = ex.text(word.text[len(name) + 1 :], word.offset + len(name) + 1) if eq else None
        ex.declare(name, default)
        pairs.append((name, default))
    return ArgCommand(node.position, node.original, tuple(pairs))


ARG = Instruction(
    "ARG", "declare build variables, overridden by --build-arg; before the first FROM they are visible in every stage",
    "ARG <name>[=<default>] ...", ArgCommand, parse_arg,
    examples=("ARG QUANTIZE_TYPE=Q5_K_M",),
)
