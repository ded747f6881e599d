"""The instructions of the Packerfile language: one :class:`~.base.Instruction` each, registered here.

Adding an instruction is a module in this package (its command, its parser and its definition) and its
line in :data:`DEFINITIONS`; one that does something at build time names its op in
:mod:`ggufpack.engine.ops`. The planner, the engine and the reference all read this table.
"""

from __future__ import annotations

import difflib

from ...errors import PackerfileError
from ..lexer import Node, ParsedText
from . import add, arg, cat, cmd, convert, copy, from_, imatrix, label, quantize
from .base import Command, Instruction
from .expansion import Expansion
from .flags import parse_flags

DEFINITIONS: tuple[Instruction, ...] = (
    from_.FROM,
    arg.ARG,
    add.ADD,
    copy.COPY,
    cat.CAT,
    convert.CONVERT,
    quantize.QUANTIZE,
    imatrix.IMATRIX,
    label.LABEL,
    cmd.CMD,
)
BY_KEYWORD: dict[str, Instruction] = {d.keyword: d for d in DEFINITIONS}
INSTRUCTIONS: tuple[str, ...] = tuple(BY_KEYWORD)

#: Dockerfile instructions we do not support, and why
_DOCKER_ONLY = {
    "RUN": "a model image runs no commands at build time",
    "ENV": "use ARG for build variables and CMD for server arguments",
    "ENTRYPOINT": "the entry point is always the llama.cpp server; use CMD for its arguments",
    "WORKDIR": "paths are relative to the image root; write the directory into the path",
    "EXPOSE": "the port is chosen by 'ggufpack run --port'",
    "USER": "use --chown on ADD/COPY/CAT",
    "VOLUME": "model images have no volumes",
    "HEALTHCHECK": "'ggufpack run' checks the server's health endpoint itself",
    "SHELL": "a model image runs no commands at build time",
    "ONBUILD": "model images have no build triggers",
    "STOPSIGNAL": "'ggufpack run' forwards signals to the server",
    "MAINTAINER": "use LABEL org.opencontainers.image.authors=...",
}


def definition_of(command: Command) -> Instruction:
    """The definition of the instruction ``command`` was parsed from."""
    return BY_KEYWORD[command.keyword]


def parse_instruction(ex: Expansion) -> Command:
    """The typed command of the node ``ex`` expands (a known keyword: see :func:`unsupported_instruction`),
    its flags checked against its definition first."""
    definition = BY_KEYWORD[ex.node.keyword]
    return definition.parse(ex, parse_flags(ex, definition.flags))


def unsupported_instruction(parsed: ParsedText, node: Node) -> PackerfileError:
    keyword = node.keyword
    if keyword in _DOCKER_ONLY:
        return parsed.error(f"{keyword} is not supported in a Packerfile: {_DOCKER_ONLY[keyword]}", node.position)
    hint = difflib.get_close_matches(keyword, INSTRUCTIONS, n=1)
    suggestion = f" (did you mean {hint[0]}?)" if hint else ""
    return parsed.error(f"unknown instruction {keyword}{suggestion}", node.position)
