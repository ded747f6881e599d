"""Generic nodes → one typed command per instruction, with variables expanded and values checked.

Each instruction is defined once, in its own module of this package (its typed command, its parser,
its flags with their defaults and help, the engine op that executes it), and registered in
:data:`~.registry.DEFINITIONS`; the planner (:func:`parse_instruction`), the engine and the reference
(``docs/packerfile.md``) are derived from that table. Each parser reads a :class:`~.lexer.Node` through
an :class:`Expansion` (the variables in scope where the instruction stands): the planner decides the
scope, this package what each instruction accepts.
"""

from .add import AddCommand
from .arg import ArgCommand
from .base import Command, Instruction
from .cat import CatCommand
from .cmd import CMD_FILE_OPTIONS, CmdCommand, CmdRole, cmd_roles
from .convert import ConvertCommand
from .copy import CopyCommand
from .expansion import Expansion
from .files import FileCommand, InlineContent
from .flags import Flags, FlagSpec
from .from_ import FromCommand
from .imatrix import ImatrixCommand
from .label import LabelCommand
from .quantize import QuantizeCommand
from .registry import BY_KEYWORD, DEFINITIONS, INSTRUCTIONS, definition_of, parse_instruction, unsupported_instruction

__all__ = [
    "BY_KEYWORD",
    "CMD_FILE_OPTIONS",
    "DEFINITIONS",
    "INSTRUCTIONS",
    "AddCommand",
    "ArgCommand",
    "CatCommand",
    "CmdCommand",
    "CmdRole",
    "Command",
    "ConvertCommand",
    "CopyCommand",
    "Expansion",
    "FileCommand",
    "FlagSpec",
    "Flags",
    "FromCommand",
    "ImatrixCommand",
    "InlineContent",
    "Instruction",
    "LabelCommand",
    "QuantizeCommand",
    "cmd_roles",
    "definition_of",
    "parse_instruction",
    "unsupported_instruction",
]
