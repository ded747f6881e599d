"""How an option is declared once and read by every surface: the Packerfile, the CLI, the library.

An option set is a frozen dataclass whose user-facing fields are declared with :func:`option`; the
field's :class:`Option` says everything about it: its Packerfile flag, its CLI flag, the kind of
value, a one-line help, how written text is read (``read``) and how any value is checked
(``check``), and the llama.cpp name it stands for. The Packerfile's flags, the CLI's argparse
options and the numpy fallback's refusals are derived from these declarations, and each option set
has one ``validated()`` method, so that a Packerfile is refused at plan time exactly where the library
would refuse the same values at run time.

A refused value is an :class:`OptionError` naming the option (and the item of a list) it is about;
each surface spells options its own way (``--type='Q9'`` in a Packerfile, ``--outtype 'Q9'`` on the
command line), and a Packerfile points at the flag as written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    import argparse

#: kinds of value: a switch, one string, a repeatable string (a tuple of them)
BOOL, STRING, LIST = "bool", "string", "list"
#: ``cli_flag`` of an option that is a positional argument on the command line
POSITIONAL = ""
#: the surfaces that spell options (:meth:`OptionError.render`)
PACKERFILE, CLI = "packerfile", "cli"


class Invalid(ValueError):
    """Why a value is refused, as text that follows the option as written: start it with ``': '`` or ``' '``."""


@dataclass(frozen=True)
class Option:
    """The declaration of one option (see the module docstring); ``name`` and ``default`` come from its field."""

    flag: str
    help: str
    kind: str = STRING
    metavar: str | None = None
    #: the CLI's long option when it is not ``flag`` (:data:`POSITIONAL`: a positional argument)
    cli_flag: str | None = None
    #: the value's key in a command's JSON arguments (default: the field name)
    key: str | None = None
    packerfile: bool = True
    cli: bool = True
    #: the allowed values, in lower case (any case is read)
    choices: tuple[str, ...] | None = None
    #: written text → value (one item of a list); raises :class:`Invalid`
    read: Callable[[str], Any] | None = None
    #: value → canonical value (one item of a list), whichever surface it came from; raises :class:`Invalid`
    check: Callable[[Any], Any] | None = None
    #: value (one item of a list) → text as a user writes it, for messages
    write: Callable[[Any], str] = str
    #: value (one item of a list) → its JSON form in a command's arguments (default: the value)
    to_json: Callable[[Any], Any] | None = None
    #: the llama.cpp name it stands for (a ``llama_model_quantize_params`` field, a tool's flag)
    llama: str | None = None
    #: QUANTIZE: whether the numpy quantizer honours it (the fallback refuses the others by name)
    numpy: bool = True
    name: str = ""
    default: Any = None

    @property
    def json_key(self) -> str:
        return self.key or self.name

    def read_text(self, text: str) -> Any:
        """A written value (one item of a list) read as this option's value."""
        if self.choices is not None:
            text = text.lower()
        return self.read(text) if self.read is not None else text

    def checked(self, value: Any) -> Any:
        """One value (one item of a list) checked: its canonical form."""
        if self.choices is not None and value not in self.choices:
            raise Invalid(f": use {' or '.join(self.choices)}")
        return self.check(value) if self.check is not None else value

    def json_value(self, value: Any) -> Any:
        convert = self.to_json or (lambda item: item)
        if self.kind == LIST:
            return [convert(item) for item in value]
        return value if value is None else convert(value)


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
    number, a keyword such as ``lora``); ``placeholder``: its metavar instead of a value (``--base DIR``).
    """

    option: str
    value: str | None = None
    quote: bool = True
    placeholder: bool = False


class OptionError(UsageError):
    """A refused option value. ``option`` names the field it is about (where a Packerfile points),
    ``index`` the item of a list option; ``str()`` is the command line's spelling (:meth:`render`)."""

    def __init__(self, owner: type, option: str, *parts: str | Ref, index: int | None = None) -> None:
        self.owner, self.option, self.parts, self.index = owner, option, parts, index
        super().__init__(self.render(CLI))

    def render(self, surface: str) -> str:
        """The message as ``surface`` (:data:`CLI` or :data:`PACKERFILE`) spells its options."""
        return "".join(part if isinstance(part, str) else _spell(declared(self.owner, part.option), part, surface)
                       for part in self.parts)


def _spell(opt: Option, ref: Ref, surface: str) -> str:
    """``--type='Q9'`` in a Packerfile, ``--outtype 'Q9'`` on the command line, ``'Q9'`` for a positional."""
    if ref.placeholder:
        meta = opt.metavar or opt.flag.upper()
        shown: str | None = f"<{meta.lower()}>" if surface == PACKERFILE else meta
    else:
        shown = None if ref.value is None else repr(ref.value) if ref.quote else ref.value
    if surface == PACKERFILE:
        return f"--{opt.flag}" + (f"={shown}" if shown is not None else "")
    flag = opt.flag if opt.cli_flag is None else opt.cli_flag
    if flag == POSITIONAL:
        return shown if shown is not None else (opt.metavar or opt.name.upper())
    return f"--{flag}" + (f" {shown}" if shown is not None else "")


def _each(owner: type, opt: Option, value: Any, step: Callable[[Any], Any]) -> Any:
    """``step`` on the value (on each item of a list); an :class:`Invalid` becomes the :class:`OptionError`."""
    items = list(enumerate(value)) if opt.kind == LIST else [(None, value)]
    out = []
    for index, item in items:
        try:
            out.append(step(item))
        except Invalid as exc:
            text = item if isinstance(item, str) else opt.write(item)
            ref = Ref(opt.name, text, quote=not isinstance(item, int))
            raise OptionError(owner, opt.name, ref, str(exc), index=index) from None
    return tuple(out) if opt.kind == LIST else out[0]


def _read_one(opt: Option, text: Any) -> Any:
    return opt.read_text(text) if isinstance(text, str) else text


def read_options(owner: type, written: Mapping[str, Any], **others: Any) -> Any:
    """An ``owner`` from values as a user wrote them (by field name: text, a list of texts for a list
    option, a bool for a switch; a value that is not text is taken as it is) and ``others``."""
    values: dict[str, Any] = {}
    for opt in options_of(owner):
        raw = written.get(opt.name)
        if raw is not None:
            values[opt.name] = bool(raw) if opt.kind == BOOL else _each(owner, opt, raw, partial(_read_one, opt))
    return owner(**values, **others)


def checked(owner: type, values: Any) -> dict[str, Any]:
    """Every declared option of ``values`` (an ``owner``) checked: the canonical values by field name,
    or the :class:`OptionError` of the first refused one."""
    out: dict[str, Any] = {}
    for opt in options_of(owner):
        value = getattr(values, opt.name)
        out[opt.name] = None if value is None else _each(owner, opt, value, opt.checked)
    return out


def json_arguments(values: Any) -> dict[str, Any]:
    """The Packerfile options of ``values`` as a command's JSON arguments, in declaration order."""
    return {o.json_key: o.json_value(getattr(values, o.name)) for o in options_of(type(values)) if o.packerfile}


# ------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser, owner: type, *, skip: Iterable[str] = ()) -> None:
    """The declared CLI options of ``owner`` as argparse arguments (their ``dest`` is the field name;
    values stay text, read by :func:`from_arguments` as a Packerfile's are)."""
    for opt in options_of(owner):
        if not opt.cli or opt.name in skip:
            continue
        extra: dict[str, Any] = {"help": opt.help}
        if opt.kind == BOOL:
            extra["action"] = "store_true"
        elif opt.kind == LIST:
            extra.update(action="append", default=[], metavar=opt.metavar)
        elif opt.choices is not None:
            extra.update(choices=list(opt.choices), default=opt.default)
        else:
            extra.update(metavar=opt.metavar, default=None)
        flag = opt.flag if opt.cli_flag is None else opt.cli_flag
        if flag == POSITIONAL:
            parser.add_argument(opt.name, nargs="?", **extra)
        else:
            parser.add_argument(f"--{flag}", dest=opt.name, **extra)


def from_arguments(owner: type, args: argparse.Namespace, **others: Any) -> Any:
    """An ``owner`` from the parsed CLI options (read as a Packerfile reads them) and ``others``."""
    written = {o.name: getattr(args, o.name) for o in options_of(owner)
               if o.cli and o.name not in others and hasattr(args, o.name)}
    return read_options(owner, written, **others)
