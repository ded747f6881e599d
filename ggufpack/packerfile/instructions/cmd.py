"""``CMD ["-m", "model.gguf", ...]``: the llama-server arguments of the image (only the last CMD counts).

The model files it names get roles (model, drafter, projector, adapters) by the option before them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import SourcePosition
from ...options.default_runtime import SYSTEM_PROMPT_OPTIONS, cmd_problem, lora_paths
from ...options.server_args import find_option
from .base import Command, Instruction
from .expansion import Expansion
from .flags import Flags

#: llama-server options (canonical names, any spelling counts) that name model files → (role, whether the
#: value is a comma-separated list of ``FNAME:SCALE`` items rather than one path)
CMD_FILE_OPTIONS: dict[str, tuple[str, bool]] = {
    "--model": ("model", False),
    "--spec-draft-model": ("drafter", False),
    "--mmproj": ("projector", False),
    "--lora": ("adapter", False), "--lora-scaled": ("adapter", True),
    "--control-vector": ("adapter", False), "--control-vector-scaled": ("adapter", True),
}
#: roles an image has at most one of
_SINGLE_ROLES = ("model", "drafter", "projector")


@dataclass(frozen=True)
class CmdRole:
    """A model file named by a CMD argument: its role, the path and the index of that path in CMD."""

    role: str
    value: str
    index: int

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "value": self.value, "index": self.index}


@dataclass(frozen=True)
class CmdCommand(Command):
    keyword: ClassVar[str] = "CMD"
    args: tuple[str, ...]
    roles: tuple[CmdRole, ...] = field(default=())
    #: where each argument is written (its opening quote), for messages about one of them
    arg_positions: tuple[SourcePosition, ...] = field(default=(), compare=False)

    def arguments(self) -> dict[str, Any]:
        return {"args": list(self.args), "roles": [r.to_json() for r in self.roles]}

    def role(self, name: str) -> CmdRole | None:
        return next((r for r in self.roles if r.role == name), None)

    def position_of(self, index: int) -> SourcePosition:
        """Where argument ``index`` is written (the instruction's position when not known)."""
        return self.arg_positions[index] if 0 <= index < len(self.arg_positions) else self.position


def cmd_roles(args: list[str], error: Callable[[str], Exception]) -> tuple[CmdRole, ...]:
    """The model files a llama-server argument list names, with the index of each path's argument (the
    adapters of one ``--lora a.gguf,b.gguf`` share it). Spellings and list syntax are llama-server's."""
    roles: list[CmdRole] = []
    i = 0
    while i < len(args):
        option = find_option(args[i])
        known = CMD_FILE_OPTIONS.get(option.name) if option is not None else None
        if known is None:
            i += 1 + (option.nargs if option is not None else 1 if args[i] in SYSTEM_PROMPT_OPTIONS else 0)
            continue
        role, scaled = known
        if i + 1 >= len(args):
            raise error(f"CMD: {args[i]} needs a value")
        paths = [path for path, _ in lora_paths(args[i + 1], scaled)] if role == "adapter" else [args[i + 1]]
        if not paths or not all(paths):
            raise error(f"CMD: {args[i]} has an empty path")
        if role in _SINGLE_ROLES and any(r.role == role for r in roles):
            raise error(f"CMD: {role} given twice")
        roles += [CmdRole(role, path, i + 1) for path in paths]
        i += 2
    return tuple(roles)


def parse_cmd(ex: Expansion, flags: Flags) -> CmdCommand:
    node = ex.node
    if node.json_args is None:
        raise ex.error(
            'CMD must use the JSON form with llama-server arguments, e.g. CMD ["-m", "model.gguf"]',
            node.position_at(node.rest_offset),
        )
    # The JSON form is expanded too (gguf-packer does it: ${CHAT_TEMPLATE} in CMD is the common case).
    args = ex.json_args()
    quotes = node.json_offsets or []
    if not args:
        raise ex.error("CMD has no arguments")
    if not args[0].startswith("-"):
        raise ex.error(f"CMD: the first argument must be a llama-server option starting with '-', got {args[0]!r}",
                       node.position_at(quotes[0] if quotes else node.rest_offset))
    positions = tuple(node.position_at(quote) for quote in quotes) if len(quotes) == len(args) else ()

    def at(index: int) -> SourcePosition:
        return positions[index] if index < len(positions) else node.position_at(node.rest_offset)

    problem = cmd_problem(args)  # what llama-server's own parser would refuse, refused here
    if problem is not None:
        raise ex.error(f"CMD: {problem.message}", at(problem.index))
    roles = cmd_roles(args, lambda message: ex.error(message, node.position_at(node.rest_offset)))
    return CmdCommand(node.position, node.original, tuple(args), roles, positions)


CMD = Instruction(
    "CMD", "the llama-server arguments the image runs with (JSON form; the last CMD counts; a final stage "
    "without one inherits its base's)", 'CMD ["-m", "<model>.gguf", <llama-server argument>, ...]', CmdCommand,
    parse_cmd, op="config:CmdOp",
    examples=('CMD ["-m", "/models/tiny.Q5_K_M.gguf", "-c", "4096"]',),
)
