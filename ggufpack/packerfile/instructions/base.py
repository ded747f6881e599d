"""What every instruction is made of: its definition (:class:`Instruction`) and its typed command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import SourcePosition
from .expansion import Expansion
from .flags import FROM, Flags, FlagSpec, option_flags, read_options


@dataclass(frozen=True)
class Command:
    """Base of every typed command: where it is written and how it reads."""

    keyword: ClassVar[str]
    #: whether executing it adds a layer to the image
    makes_layer: ClassVar[bool] = False
    position: SourcePosition
    original: str

    def arguments(self) -> dict[str, Any]:
        """The expanded arguments, JSON-able (what ``plan`` prints and what cache keys hash)."""
        raise NotImplementedError

    @property
    def from_ref(self) -> str | None:
        """The ``--from`` value, for instructions that read another stage, image or the context."""
        return None


@dataclass(frozen=True)
class LayerCommand(Command):
    """A command whose op adds a layer to the image (ADD, COPY, CAT, CONVERT, QUANTIZE, IMATRIX)."""

    makes_layer: ClassVar[bool] = True


@dataclass(frozen=True)
class Instruction:
    """One Packerfile instruction, defined in one place: the planner, the engine and the reference
    (``docs/packerfile.md``) all read it from :data:`ggufpack.packerfile.instructions.DEFINITIONS`.

    ``parse`` turns a node (through an :class:`Expansion` of its scope, with its flags already checked
    against ``flags`` and expanded) into a ``command``. ``op`` names what executes it in the build engine,
    as ``"module:Class"`` inside :mod:`ggufpack.engine.ops` (the engine resolves it; this layer imports
    nothing of the engine); None for FROM and ARG, which only shape the plan.
    """

    keyword: str
    #: one line: what it does
    summary: str
    #: its form, e.g. ``CONVERT [flags] <src> <dest>``
    usage: str
    command: type[Command]
    parse: Callable[[Expansion, Flags], Command]
    flags: tuple[FlagSpec, ...] = ()
    op: str | None = None
    #: what it reads without ``--from``: the build ``"context"`` or the ``"stage"``'s own files
    reads: str = "context"
    #: whether its arguments may open heredocs (``<<EOF``); the lexer's ``HEREDOC_INSTRUCTIONS``
    heredocs: bool = False
    #: Packerfile lines that use it, for the reference
    examples: tuple[str, ...] = ()


def need_args(ex: Expansion, minimum: int, usage: str) -> None:
    if len(ex.node.words) < minimum:
        raise ex.error(f"{ex.node.keyword} needs {usage}")


def source_and_dest(ex: Expansion) -> tuple[str, str]:
    """The ``<src> <dest>`` of CONVERT and QUANTIZE (words or the JSON form)."""
    node = ex.node
    values = ex.arguments()
    if len(values) != 2:
        raise ex.error(f"{node.keyword} takes exactly one source and one destination, got {len(values)} "
                       "argument(s)")
    for value, word in zip(values, node.words, strict=False):
        if not value:
            raise ex.error(f"{node.keyword} has an empty path", word.position)
    return values[0], values[1]


@dataclass(frozen=True)
class OptionsCommand(LayerCommand):
    """CONVERT and QUANTIZE: ``[--from=...] <src> <dest>`` and the validated options of an option set
    (:mod:`ggufpack.options`), whose Packerfile options are the instruction's other flags."""

    #: the option set (``options`` is one of it)
    option_set: ClassVar[type]
    source: str
    dest: str
    source_from: str | None
    options: Any

    def arguments(self) -> dict[str, Any]:
        return {"source": self.source, "dest": self.dest, "from": self.source_from, **self.options.arguments()}

    @property
    def from_ref(self) -> str | None:
        return self.source_from

    @classmethod
    def parse(cls, ex: Expansion, flags: Flags) -> OptionsCommand:
        """The parser of such an instruction: its options go through the option set's ``validated()``."""
        source, dest = source_and_dest(ex)
        options = read_options(ex, flags, cls.option_set)
        return cls(ex.node.position, ex.node.original, source, dest, flags.lowered("from"), options)


def options_instruction(command: type[OptionsCommand], summary: str, *, op: str,
                        examples: tuple[str, ...]) -> Instruction:
    """The definition of an instruction whose flags are ``--from`` and its option set's Packerfile options."""
    return Instruction(command.keyword, summary, f"{command.keyword} [flags] <src> <dest>", command, command.parse,
                       flags=(FROM, *option_flags(command.option_set)), op=op, reads="stage", examples=examples)
