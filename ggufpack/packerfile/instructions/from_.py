"""``FROM <scratch|stage|image> [AS <name>]``: starts a stage."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Command, Instruction
from .expansion import Expansion
from .flags import Flags, FlagSpec

_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9\-_.]*$")


@dataclass(frozen=True)
class FromCommand(Command):
    keyword: ClassVar[str] = "FROM"
    base: str
    name: str | None
    platform: str | None

    def arguments(self) -> dict[str, Any]:
        return {"base": self.base, "name": self.name, "platform": self.platform}


def parse_from(ex: Expansion, flags: Flags) -> FromCommand:
    node = ex.node
    words = node.words
    usage = "FROM takes 'FROM <scratch|stage|image> [AS <name>]'"
    if not words:
        raise ex.error(f"{usage}: the base is missing")
    if len(words) > 1 and words[1].text.lower() != "as":
        raise ex.error(f"{usage}: expected AS after the base, got {words[1].text!r}", words[1].position)
    if len(words) == 2:
        raise ex.error(f"{usage}: AS needs a stage name", words[1].position)
    if len(words) > 3:
        raise ex.error(f"{usage}: unexpected {words[3].text!r} after the stage name", words[3].position)
    base = ex.word(words[0])
    if not base:
        raise ex.error("FROM has an empty base", words[0].position)
    name = None
    if len(words) == 3:
        name = ex.word(words[2]).lower()
        if not _STAGE_NAME_RE.match(name):
            raise ex.error(
                f"invalid stage name {name!r}: start with a letter, then letters, digits, '-', '_' or '.'",
                words[2].position,
            )
    return FromCommand(node.position, node.original, base, name, flags.string("platform"))


FROM = Instruction(
    "FROM", "start a stage from nothing (scratch), an earlier stage or an image (in the store or a registry)",
    "FROM [--platform=<os/arch>] <scratch|stage|image> [AS <name>]", FromCommand, parse_from,
    flags=(FlagSpec("platform", "the platform of the base image (default: the build's --platform)",
                    metavar="os/arch[/variant]"),),
    examples=("FROM scratch AS f16", "FROM ghcr.io/example/tiny-llama:q8_0"),
)
