"""How an option is declared once and read by every surface: the Packerfile, the CLI, the library.

An option set is a frozen dataclass; each of its user-facing fields is declared with :func:`option`,
whose :class:`Option` holds everything about it: the Packerfile flag, the CLI flag, the kind of value,
its help text, how a written value is read (``read``) and checked (``check``), and the llama.cpp
name it stands for. The Packerfile's flag table and parser, the CLI's argparse options and the numpy
fallback's refusals are all derived from these declarations; one ``validate`` function per option set
(:func:`ggufpack.options.quantize.validate`, :func:`ggufpack.options.convert.validate`) applies the
same checks for all of them, so a Packerfile is refused at plan time exactly where the library would
refuse the same values at run time.

Errors are :class:`OptionError` values that name the option they are about; each surface spells
them its own way (``--type='Q9'`` in a Packerfile, ``--outtype 'Q9'`` on the command line) and the
Packerfile points at the flag as written.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..errors import UsageError

#: kinds of value: a switch, one string, a repeatable string (a tuple of them)
BOOL, STRING, LIST = "bool", "string", "list"
#: ``cli_flag`` of an option that is a positional argument on the command line
POSITIONAL = ""


class Invalid(ValueError):
    """Why a value is refused, as a text that follows the option as written: start it with ``': '`` or ``' '``."""


@dataclass(frozen=True)
class Option:
    """The declaration of one option (see the module docstring); ``name`` and ``default`` come from its field."""

    flag: str
    kind: str = STRING
    help: str = ""
    metavar: str | None = None
    #: the CLI's long option when it is not ``flag`` (:data:`POSITIONAL`: a positional argument)
    cli_flag: str | None = None
    #: the value's key in a command's JSON arguments (default: the field name)
    key: str | None = None
    packerfile: bool = True
    cli: bool = True
    #: allowed values (a Packerfile accepts them in any case; argparse gets them as ``choices``)
    choices: tuple[str, ...] | None = None
    #: written text → value (one item of a list); raises :class:`Invalid`
    read: Callable[[str], Any] | None = None
    #: value → canonical value (one item of a list), for values from any surface; raises :class:`Invalid`
    check: Callable[[Any], Any] | None = None
    #: value → text as a user writes it, for messages (default ``str``)
    write: Callable[[Any], str] | None = None
    #: value → its JSON form in a command's arguments (one item of a list)
    to_json: Callable[[Any], Any] | None = None
    #: the llama.cpp name it stands for (``llama_model_quantize_params`` field, tool flag), for references
    llama: str | None = None
    #: QUANTIZE: whether the numpy quantizer honours it (the fallback refuses the others by name)
    numpy: bool = True
    name: str = ""
    default: Any = None

    @property
    def json_key(self) -> str:
        return self.key or self.name

    def written(self, value: Any) -> str:
        return self.write(value) if self.write is not None else str(value)

    def from_text(self, text: str) -> Any:
        """A written value (one item of a list) read as this option's value."""
        value: Any = text
        if self.choices is not None:
            value = text.lower()
            if value not in self.choices:
                raise Invalid(f": use {' or '.join(self.choices)}")
        return self.read(value) if self.read is not None else value

    def json_value(self, value: Any) -> Any:
        if self.kind == LIST:
            return [self.to_json(v) if self.to_json is not None else v for v in value]
        return self.to_json(value) if self.to_json is not None and value is not None else value


def option(default: Any = None, **declaration: Any) -> Any:
    """A dataclass field that is a user-facing option (``declaration``: the fields of :class:`Option`)."""
    return field(default=default, metadata={"option": Option(**declaration)})


@cache
def options_of(cls: type) -> tuple[Option, ...]:
    """The declared options of an option set, in field order, with their names and defaults."""
    return tuple(
        dataclasses.replace(f.metadata["option"], name=f.name, default=f.default)
        for f in dataclasses.fields(cls) if "option" in f.metadata
    )


def declared(cls: type, name: str) -> Option:
    return next(o for o in options_of(cls) if o.name == name)


@dataclass(frozen=True)
class Ref:
    """An option named inside a message, spelled by the surface that reports it.

    ``value``: the value written after it; ``quote``: as a Python literal (user input) or bare (a
    keyword such as ``lora``); ``placeholder``: spelled with its metavar instead (``--base DIR``).
    """

    option: str
    value: str | None = None
    quote: bool = True
    placeholder: bool = False


class OptionError(UsageError):
    """A refused option value. ``option`` names the field it is about (where a Packerfile points),
    ``index`` the item of a list option; ``str()`` is the command line's spelling."""

    def __init__(self, owner: type, option: str, *parts: str | Ref, index: int | None = None) -> None:
        self.owner, self.option, self.parts, self.index = owner, option, parts, index
        super().__init__(self.render("cli"))

    def render(self, surface: str) -> str:
        """The message as ``surface`` (``"cli"`` or ``"packerfile"``) spells its options."""
        return "".join(part if isinstance(part, str) else spell(declared(self.owner, part.option), part, surface)
                       for part in self.parts)


def spell(opt: Option, ref: Ref, surface: str) -> str:
    """How ``surface`` writes an option (and a value): ``--type='Q9'`` in a Packerfile, ``--outtype 'Q9'`` on
    the command line, ``'Q9'`` for a positional argument."""
    if ref.placeholder:
        meta = opt.metavar or opt.flag.upper()
        shown: str | None = f"<{meta.lower()}>" if surface == "packerfile" else meta
    else:
        shown = None if ref.value is None else repr(ref.value) if ref.quote else ref.value
    if surface == "packerfile":
        return f"--{opt.flag}" + (f"={shown}" if shown is not None else "")
    flag = opt.flag if opt.cli_flag is None else opt.cli_flag
    if flag == POSITIONAL:
        return shown if shown is not None else (opt.metavar or opt.name.upper())
    return f"--{flag}" + (f" {shown}" if shown is not None else "")


def invalid(owner: type, opt: Option, value: Any, exc: Invalid, index: int | None = None) -> OptionError:
    """The :class:`OptionError` for ``value`` of ``opt`` refused with ``exc``."""
    return OptionError(owner, opt.name, Ref(opt.name, opt.written(value)), str(exc), index=index)


def checked(owner: type, values: Any) -> dict[str, Any]:
    """Every declared option of ``values`` (an instance of ``owner``) through its ``check``: the canonical
    values by field name, or the :class:`OptionError` of the first refused one."""
    out: dict[str, Any] = {}
    for opt in options_of(owner):
        value = getattr(values, opt.name)
        if opt.check is not None and value is not None:
            if opt.kind == LIST:
                items = []
                for index, item in enumerate(value):
                    try:
                        items.append(opt.check(item))
                    except Invalid as exc:
                        raise invalid(owner, opt, item, exc, index) from None
                value = tuple(items)
            else:
                try:
                    value = opt.check(value)
                except Invalid as exc:
                    raise invalid(owner, opt, value, exc) from None
        out[opt.name] = value
    return out


def json_arguments(values: Any) -> dict[str, Any]:
    """The Packerfile options of ``values`` as a command's JSON arguments, in declaration order."""
    return {o.json_key: o.json_value(getattr(values, o.name)) for o in options_of(type(values)) if o.packerfile}


# ------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser, owner: type, *, skip: Iterable[str] = ()) -> None:
    """The declared CLI options of ``owner`` as argparse arguments (their ``dest`` is the field name)."""
    skipped = set(skip)
    for opt in options_of(owner):
        if not opt.cli or opt.name in skipped:
            continue
        flag = opt.flag if opt.cli_flag is None else opt.cli_flag
        extra: dict[str, Any] = {"help": opt.help}
        if opt.kind == BOOL:
            extra["action"] = "store_true"
        elif opt.kind == LIST:
            extra.update(action="append", default=[], metavar=opt.metavar)
        else:
            extra.update(metavar=opt.metavar, default=opt.default)
            if opt.choices is not None:
                extra.update(choices=list(opt.choices), metavar=None)
        if flag == POSITIONAL:
            parser.add_argument(opt.name, nargs="?", **extra)
        else:
            parser.add_argument(f"--{flag}", dest=opt.name, **extra)


def from_arguments(owner: type, args: argparse.Namespace, **others: Any) -> Any:
    """An ``owner`` from the parsed CLI options (read as a Packerfile reads them) and ``others``."""
    values: dict[str, Any] = {}
    for opt in options_of(owner):
        if not opt.cli or opt.name in others or not hasattr(args, opt.name):
            continue
        raw = getattr(args, opt.name)
        if raw is None or opt.kind == BOOL:
            values[opt.name] = raw if raw is not None else opt.default
        elif opt.kind == LIST:
            values[opt.name] = tuple(_read(owner, opt, item, index) for index, item in enumerate(raw))
        else:
            values[opt.name] = _read(owner, opt, raw, None)
    return owner(**values, **others)


def _read(owner: type, opt: Option, text: Any, index: int | None) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return opt.from_text(text)
    except Invalid as exc:
        raise OptionError(owner, opt.name, Ref(opt.name, text), str(exc), index=index) from None


def names(options: Sequence[Option]) -> list[str]:
    return [o.name for o in options]
