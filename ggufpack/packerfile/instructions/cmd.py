"""``CMD ["-m", "model.gguf", ...]``: the llama-server arguments of the image (only the last CMD counts).

The model files it names get roles (model, drafter, projector, adapters) by the option before them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .base import Command, Instruction
from .expansion import Expansion
from .flags import Flags

#: CMD options that name a model file: option → (role, number of values; the path is the first)
CMD_FILE_OPTIONS: dict[str, tuple[str, int]] = {
    "-m": ("model", 1), "--model": ("model", 1),
    "-md": ("drafter", 1), "--model-draft": ("drafter", 1),
    "-mm": ("projector", 1), "--mmproj": ("projector", 1),
    "--lora": ("adapter", 1), "--lora-scaled": ("adapter", 2),
    "--control-vector": ("adapter", 1), "--control-vector-scaled": ("adapter", 2),
}


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

    def arguments(self) -> dict[str, Any]:
        return {"args": list(self.args), "roles": [r.to_json() for r in self.roles]}

    def role(self, name: str) -> CmdRole | None:
        return next((r for r in self.roles if r.role == name), None)


def cmd_roles(args: list[str], error: Callable[[str], Exception]) -> tuple[CmdRole, ...]:
    """The model files a llama-server argument list names, with the index of each path."""
    roles: list[CmdRole] = []
    i = 0
    while i < len(args):
        option = CMD_FILE_OPTIONS.get(args[i])
        if option is None:
            i += 1
            continue
        role, count = option
        if i + count >= len(args):
            raise error(f"CMD: {args[i]} needs {count} value(s)")
        path = args[i + 1]
        if not path:
            raise error(f"CMD: {args[i]} has an empty path")
        if role != "adapter" and any(r.role == role for r in roles):
            raise error(f"CMD: {role} given twice")
        roles.append(CmdRole(role, path, i + 1))
        i += count + 1
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
    roles = cmd_roles(args, lambda message: ex.error(message, node.position_at(node.rest_offset)))
    return CmdCommand(node.position, node.original, tuple(args), roles)


CMD = Instruction(
    "CMD", "the llama-server arguments the image runs with (JSON form; the last CMD counts; a final stage "
    "without one inherits its base's)", 'CMD ["-m", "<model>.gguf", <llama-server argument>, ...]', CmdCommand,
    parse_cmd, op="config:CmdOp",
    examples=('CMD ["-m", "/models/tiny.Q5_K_M.gguf", "-c", "4096"]',),
)
