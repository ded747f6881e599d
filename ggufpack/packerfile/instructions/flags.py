"""An instruction's flags: declared as data (:class:`FlagSpec`), read from a node (:class:`Flags`).

The flags of CONVERT and QUANTIZE are the options of :mod:`ggufpack.options` (:func:`option_flags`),
read and validated by the same declarations the CLI and the library use (:func:`read_options`); a
refused value is reported at the flag as written.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from ...errors import SourcePosition
from ...options import declare
from ...options.declare import BOOL, LIST, PACKERFILE, STRING, OptionError
from .expansion import Expansion

__all__ = ["BOOL", "LIST", "STRING", "FlagSpec", "Flags", "option_flags", "parse_flags", "read_options"]

_CHMOD_RE = re.compile(r"^[0-7]{3,4}$")
_CHOWN_RE = re.compile(r"^(\d+|root)(:(\d+|root))?$")


@dataclass(frozen=True)
class FlagSpec:
    """One flag of an instruction: its name, kind (:data:`BOOL`, :data:`STRING`, :data:`LIST`), its
    default and a one-line help (the reference, ``docs/packerfile.md``, is generated from them)."""

    name: str
    help: str
    kind: str = STRING
    default: Any = None
    #: what the value is, as the reference writes it: ``--from=<stage|image|context>``
    metavar: str = "value"

    @property
    def synopsis(self) -> str:
        return f"--{self.name}" if self.kind == BOOL else f"--{self.name}=<{self.metavar}>"


def option_flags(owner: type) -> tuple[FlagSpec, ...]:
    """The flags of an option set's Packerfile options (:func:`ggufpack.options.declare.option`)."""
    return tuple(FlagSpec(o.flag, o.help, o.kind, o.default, "|".join(o.choices or ()) or (o.metavar or o.flag).lower())
                 for o in declare.options_of(owner) if o.packerfile)


FROM = FlagSpec("from", "read the sources from this stage (name or index), image or the build context",
                metavar="stage|image|context")
CHOWN = FlagSpec("chown", "owner of the files written, numeric (there is no user database): uid[:gid]",
                 metavar="uid[:gid]")
CHMOD = FlagSpec("chmod", "permissions of the files written, in octal (644, 0755)", metavar="mode")


@dataclass
class Flags:
    """The flags of one node, checked against its instruction's specs and expanded."""

    values: dict[str, Any]
    #: where each flag is written, every occurrence of a list flag in order
    positions: dict[str, list[SourcePosition]]

    def string(self, name: str) -> str | None:
        return self.values.get(name)

    def boolean(self, name: str) -> bool:
        return bool(self.values.get(name, False))

    def strings(self, name: str) -> list[str]:
        return list(self.values.get(name, []))

    def position(self, name: str, index: int = 0) -> SourcePosition | None:
        """Where ``--name`` is written (its ``index``-th occurrence); None when it is not."""
        written = self.positions.get(name, [])
        return written[min(index, len(written) - 1)] if written else None

    def lowered(self, name: str) -> str | None:
        """A flag naming a stage, an image or the context (``--from``), in lower case as names are."""
        value = self.string(name)
        return value.lower() if value else None


def _check_open(ex: Expansion) -> None:
    """Report a quote or ``${`` left open, before arity checks that would miscount the words."""
    node = ex.node
    if node.open_at is None or node.json_args is not None or node.keyword == "CMD":
        return
    kind = {"'": "unterminated single quote", '"': "unterminated double quote"}.get(
        node.open_char, "bad variable substitution: missing '}'"
    )
    raise ex.error(kind, node.position_at(node.open_at))


def parse_flags(ex: Expansion, specs: tuple[FlagSpec, ...]) -> Flags:
    """The node's flags, each known to ``specs``, given once (a list flag: any number of times), expanded."""
    node = ex.node
    _check_open(ex)
    kinds = {spec.name: spec.kind for spec in specs}
    values: dict[str, Any] = {}
    positions: dict[str, list[SourcePosition]] = {}
    for flag in node.flags:
        kind = kinds.get(flag.name)
        if kind is None:
            known = ", ".join(f"--{name}" for name in kinds) or "none"
            hint = difflib.get_close_matches(flag.name, list(kinds), n=1)
            suggestion = f" (did you mean --{hint[0]}?)" if hint else ""
            raise ex.error(f"unknown flag --{flag.name} for {node.keyword}{suggestion}; known flags: {known}",
                           flag.position)
        if kind != LIST and flag.name in values:
            raise ex.error(f"flag --{flag.name} is given twice", flag.position)
        positions.setdefault(flag.name, []).append(flag.position)
        if kind == BOOL:
            raw = "true" if flag.value is None else ex.flag(flag).lower()
            if raw not in ("true", "false"):
                raise ex.error(f"flag --{flag.name} takes true or false, not {raw!r}", flag.value_position)
            values[flag.name] = raw == "true"
            continue
        if flag.value is None:
            raise ex.error(f"flag --{flag.name} needs a value: write --{flag.name}=<value>", flag.position)
        value = ex.flag(flag)
        if value == "":
            raise ex.error(f"flag --{flag.name} has an empty value", flag.value_position)
        if kind == LIST:
            values.setdefault(flag.name, []).append(value)
        else:
            values[flag.name] = value
    return Flags(values, positions)


def read_options(ex: Expansion, flags: Flags, owner: type) -> Any:
    """The option set ``owner`` from the node's flags, through its ``validated()``: the very checks the
    CLI and the library apply; a refused value is an error at its flag (the item of a list flag)."""
    written = {o.name: flags.values[o.flag] for o in declare.options_of(owner)
               if o.packerfile and o.flag in flags.values}
    try:
        return declare.read_options(owner, written).validated()
    except OptionError as exc:
        flag = declare.declared(owner, exc.option).flag
        raise ex.error(f"{ex.node.keyword} {exc.render(PACKERFILE)}", flags.position(flag, exc.index or 0)) from None


def chown_chmod(ex: Expansion, flags: Flags) -> tuple[str | None, str | None]:
    """``--chown`` and ``--chmod`` (:data:`CHOWN`, :data:`CHMOD`), checked."""
    chown, chmod = flags.string("chown"), flags.string("chmod")
    if chown is not None and not _CHOWN_RE.match(chown):
        raise ex.error(
            f"--chown={chown!r}: model images have no user database, use numeric <uid>[:<gid>]",
            flags.position("chown"),
        )
    if chmod is not None and not _CHMOD_RE.match(chmod):
        raise ex.error(f"--chmod={chmod!r}: use octal permissions such as 644 or 0755", flags.position("chmod"))
    return chown, chmod
