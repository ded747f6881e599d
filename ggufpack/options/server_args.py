"""Check and read llama-server arguments (a Packerfile CMD) the way llama-server's own parser does.

The options come from :mod:`.llama_server`, generated from the vendored llama.cpp's ``common/arg.cpp``;
the rules below are those of ``common_params_parse_ex`` in the same file::

    from ggufpack.options.server_args import ServerArgsError, check_server_args, parse_server_args

    args = parse_server_args(["-m", "model.gguf", "--temp", "0.2", "-c", "2048", "--lora", "a.gguf"])
    args.values                 # {"--model": "model.gguf", "--temp": 0.2, "--ctx-size": 2048, "--lora": ["a.gguf"]}
    args.get("-c")              # 2048: any spelling, or the canonical name; ``default`` when not given
    args.effective("-b")        # 2048: not given, so llama-server's own default (ServerOption.default)
    args.given("--ctx-size")    # True
    args.value_index("-m")      # 1: the argv index of the (last) value, for CmdParameterIndex and FILE:LINE:COL
    args.items                  # one ParsedArg per option given, in argv order
    args.warnings               # ArgProblem(severity="warning"): accepted, but probably not what was meant

    problem = check_server_args(["--ctx", "2048"])     # the first problem, or None
    problem.index, problem.code, problem.message       # 0, "unknown-option", "unknown llama-server option ..."
    problem.suggestions                                # ("--ctx-size", "--ctx-checkpoints")

    try:
        parse_server_args(argv)
    except ServerArgsError as exc:                     # a UsageError (exit code 2)
        exc.problem                                    # the ArgProblem; exc.with_location(pos) for FILE:LINE:COL

``argv`` is the list after the program name (a CMD's JSON array). Values are typed by the option's
kind: a flag is True (False for its ``--no-...`` spelling), ``int``/``float`` numbers (or one of the
option's keywords, ``-ngl auto``), a ``choice``/``string``/``path`` the text, two-value options a
tuple; a repeatable option (``--lora``, ``--alias``) gives a list gathered from every occurrence
(comma-separated items split as llama.cpp splits them); any other option given twice keeps its last
value, as llama-server does (with a warning).

How llama-server reads its arguments (llama.cpp ``common/arg.cpp``), which this module follows:

- exact spellings only: no prefix matching, no ``--opt=value`` form, no positional arguments; in a
  token starting with ``--`` every ``_`` reads as ``-`` (``--ctx_size`` is ``--ctx-size``);
- the first problem stops it (``error: invalid argument: X``, ``expected value for argument``,
  ``error while handling argument "X": ...``) with exit status 1; so does this module;
- the token after an option is its value whatever it looks like (``-c -m`` gives ``-c`` the value ``-m``);
- integers go through ``std::stoi``: leading blanks and a sign are accepted, text after the digits is
  ignored (``2048k`` reads as 2048: accepted here with a warning); floats through ``std::stof``
  (``inf``, ``nan`` and hex floats accepted); out-of-range numbers are refused;
- a repeated option: its handler runs again (lists grow; other values are replaced) and llama.cpp
  logs a deprecation warning asking for comma-separated values;
- ``LLAMA_ARG_*`` environment variables (``ServerOption.env``; ``LLAMA_ARG_NO_*`` for negatable flags)
  are read first and the command line overrides them; ``/etc/llama.cpp/config.ini`` and
  ``~/.config/llama.cpp/config.ini`` are applied before both. Neither is looked at here.

What is not checked (llama-server finds it later): files (``ServerOption.reads_file`` options open
theirs while parsing), devices, template names, JSON, the format of list values.
"""

from __future__ import annotations

import difflib
import math
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..errors import UsageError
from .llama_server import OPTIONS
from .server_option import ServerOption

__all__ = [
    "ArgProblem",
    "ParsedArg",
    "ServerArgs",
    "ServerArgsError",
    "check_server_args",
    "find_option",
    "parse_server_args",
    "suggest_options",
]


@dataclass(frozen=True)
class ArgProblem:
    """Something wrong (or suspicious) in an argv, at ``index``: the token to point at."""

    index: int
    arg: str
    #: ``unknown-option``, ``positional``, ``missing-value``, ``bad-value``, ``removed``; warnings:
    #: ``repeated``, ``trailing-text``, ``looks-like-option``, ``exits``
    code: str
    message: str
    suggestions: tuple[str, ...] = ()
    severity: str = "error"
    #: the option it concerns, when known
    option: ServerOption | None = None


class ServerArgsError(UsageError):
    """An argv llama-server would refuse; ``problem`` says where and why."""

    def __init__(self, problem: ArgProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass(frozen=True)
class ParsedArg:
    """One option given in the argv."""

    index: int  # of the option's token
    spelling: str  # as written (``--ctx_size`` stays so here)
    option: ServerOption
    raw: tuple[str, ...]  # the value tokens (none for a flag)
    value: Any  # this occurrence's typed value (a list for a split value)

    @property
    def value_index(self) -> int | None:
        """The argv index of the first value token (None for a flag)."""
        return self.index + 1 if self.raw else None


@dataclass(frozen=True)
class ServerArgs:
    """A checked argv: the options given, typed; see the module docstring."""

    argv: tuple[str, ...]
    items: tuple[ParsedArg, ...]
    values: dict[str, Any]
    warnings: tuple[ArgProblem, ...] = field(default=())

    def _name(self, name: str) -> str:
        opt = find_option(name)
        if opt is None:
            raise KeyError(f"{name!r} is not a llama-server option")
        return opt.name

    def given(self, name: str) -> bool:
        """Whether the option (any of its spellings, negations included) is in the argv."""
        return self._name(name) in self.values

    def get(self, name: str, default: Any = None) -> Any:
        """The option's value from the argv, else ``default``. ``KeyError`` for a name that is no
        llama-server option."""
        return self.values.get(self._name(name), default)

    def effective(self, name: str) -> Any:
        """The value llama-server runs with: the argv's, else its own default as the sources state it
        (``ServerOption.default``; None where the sources do not say, e.g. ``--threads-batch``)."""
        opt = find_option(name)
        if opt is None:
            raise KeyError(f"{name!r} is not a llama-server option")
        return self.values.get(opt.name, opt.default)

    def occurrences(self, name: str) -> tuple[ParsedArg, ...]:
        key = self._name(name)
        return tuple(item for item in self.items if item.option.name == key)

    def value_index(self, name: str) -> int | None:
        """The argv index of the value of the option's last occurrence (None: not given, or a flag)."""
        found = self.occurrences(name)
        return found[-1].value_index if found else None


# --------------------------------------------------------------------------------------------- lookup


@cache
def _by_spelling() -> dict[str, tuple[ServerOption, bool]]:
    table: dict[str, tuple[ServerOption, bool]] = {}
    for opt in OPTIONS:
        for s in opt.spellings:
            table[s] = (opt, True)
        for s in opt.negations:
            table[s] = (opt, False)
    return table


def _normalized(arg: str) -> str:
    return arg.replace("_", "-") if arg.startswith("--") else arg


def find_option(spelling: str) -> ServerOption | None:
    """The option ``spelling`` names (any spelling or negation, ``_`` for ``-`` after ``--``), or None."""
    found = _by_spelling().get(_normalized(spelling))
    return found[0] if found else None


def suggest_options(arg: str, limit: int = 3) -> tuple[str, ...]:
    """Spellings meant by an unknown ``arg``: options it begins (``--ctx`` → ``--ctx-size``), options
    taking it as a value (``--mmap`` → ``--load-mode``), then close spellings."""
    arg = _normalized(arg.split("=", 1)[0])
    spellings = list(_by_spelling())
    out: list[str] = []
    bare = arg.lstrip("-")
    if arg.startswith("--") and len(bare) >= 2:
        out += sorted((s for s in spellings if s.startswith(arg) and s != arg), key=len)
    word = bare[3:] if bare.startswith("no-") else bare
    out += [opt.name for opt in OPTIONS if opt.choices and word in opt.choices]
    out += difflib.get_close_matches(arg, spellings, n=limit, cutoff=0.75)
    return tuple(dict.fromkeys(out))[:limit]


# --------------------------------------------------------------------------------------------- numbers

_WS = " \t\n\v\f\r"
_INT_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?\d+)")
_FLOAT_RE = re.compile(
    r"[ \t\n\v\f\r]*([+-]?(?:inf(?:inity)?|nan(?:\([0-9a-z_]*\))?"
    r"|0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?\d+)?"
    r"|(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?))",
    re.IGNORECASE,
)
#: (smallest, largest) of what each C++ parser returns without ``out_of_range``
_INT_RANGES = {"stoi": (-(2**31), 2**31 - 1), "stol": (-(2**63), 2**63 - 1), "stoll": (-(2**63), 2**63 - 1),
               "stoul": (-(2**64 - 1), 2**64 - 1), "stoull": (-(2**64 - 1), 2**64 - 1)}
_FLT_MIN = 1.1754943508222875e-38  # the smallest normal float: below it strtof reports underflow


class _BadNumber(ValueError):
    pass


def read_number(text: str, parse: str) -> tuple[int | float, str]:
    """(the number llama.cpp's ``std::<parse>`` reads from ``text``, the text it leaves unread).

    Raises :class:`ValueError` where the C++ call throws (no number; out of range)."""
    if parse in _INT_RANGES:
        m = _INT_RE.match(text)
        if not m:
            raise _BadNumber("not a whole number")
        value = int(m.group(1))
        low, high = _INT_RANGES[parse]
        if not low <= value <= high:
            raise _BadNumber("out of range")
        if parse in ("stoul", "stoull") and value < 0:  # strtoul negates in unsigned arithmetic
            value += 2**64
        return value, text[m.end():]
    m = _FLOAT_RE.match(text)
    if not m:
        raise _BadNumber("not a number")
    literal = m.group(1)
    body = literal.lstrip("+-").lower()
    sign = -1.0 if literal.startswith("-") else 1.0
    if body.startswith(("inf", "nan")):
        number = sign * (math.inf if body.startswith("inf") else math.nan)
    elif body.startswith("0x"):
        number = sign * float.fromhex(body if "p" in body else body + "p0")
    else:
        number = sign * float(body)
    if not body.startswith(("inf", "nan")):
        if math.isinf(number):
            raise _BadNumber("out of range")
        if parse == "stof":  # strtof's ERANGE: past FLT_MAX once rounded, or below the smallest normal
            try:
                rounded = struct.unpack("f", struct.pack("f", number))[0]
            except OverflowError:
                rounded = math.inf
            if math.isinf(rounded) or (number != 0 and abs(number) < _FLT_MIN):
                raise _BadNumber("out of range")
    return number, text[m.end():]


_OPS = {"<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
        "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


_OP_WORDS = {"<": "below", ">": "above", "<=": "of at most", ">=": "of at least", "==": "equal to",
             "!=": "other than"}


def _refused(opt: ServerOption, number: float) -> str | None:
    """Why llama.cpp's handler throws for ``number`` (its ``if (value < 0) throw``), or None."""
    for op, bound in opt.refuse_if:
        if op == "nonfinite":
            if not math.isfinite(number):
                return "values that are not finite"
        elif op in _OPS and _OPS[op](number, bound):
            return f"values {_OP_WORDS[op]} {bound}"
    return None


# --------------------------------------------------------------------------------------------- values


def split_csv(value: str) -> list[str]:
    """llama.cpp's ``parse_csv_row``: comma-separated fields, double quotes group, ``""`` is a quote."""
    fields, current, quoted, i = [], "", False, 0
    while i < len(value):
        ch = value[i]
        if ch == '"':
            if not quoted:
                if current:
                    current += '"'
                else:
                    quoted = True
            elif i + 1 < len(value) and value[i + 1] == '"':
                current += '"'
                i += 1
            else:
                quoted = False
        elif ch == "," and not quoted:
            fields.append(current)
            current = ""
        else:
            current += ch
        i += 1
    fields.append(current)
    return fields


def _items(opt: ServerOption, text: str) -> list[str]:
    if opt.split == "csv":
        return split_csv(text)
    if opt.split == ",":
        return text.split(",")
    return [text]


def _looks_like_option(text: str) -> bool:
    return find_option(text) is not None


def _quote(text: str) -> str:
    return repr(text)


class _Checker:
    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = [str(a) for a in argv]
        self.items: list[ParsedArg] = []
        self.values: dict[str, Any] = {}
        self.warnings: list[ArgProblem] = []

    def run(self) -> ArgProblem | None:
        i = 0
        argv = self.argv
        while i < len(argv):
            token = argv[i]
            found = _by_spelling().get(_normalized(token))
            if found is None:
                return self.unknown(i, token)
            opt, positive = found
            if opt.removed:
                return ArgProblem(i, token, "removed", f"llama-server refuses {token}: {opt.removed}",
                                  severity="error", option=opt)
            if opt.exits:
                self.warn(i, token, "exits", f"{token} makes llama-server {opt.help.lower()} instead of serving",
                          opt)
            if opt.nargs == 0:
                self.store(ParsedArg(i, token, opt, (), positive))
                i += 1
                continue
            if i + opt.nargs >= len(argv):
                hint = " ".join(opt.metavars or ()) or "a value"
                return ArgProblem(i, token, "missing-value", f"{token} needs {hint} after it", option=opt)
            raw = tuple(argv[i + 1:i + 1 + opt.nargs])
            typed: list[Any] = []
            for k, text in enumerate(raw):
                value, problem = self.value(opt, token, text, i + 1 + k)
                if problem is not None:
                    return problem
                typed.append(value)
            if opt.nargs > 1:
                value: Any = tuple(typed)
            elif opt.split and opt.kind in ("string", "path"):
                value = _items(opt, typed[0])
            else:
                value = typed[0]
            self.store(ParsedArg(i, token, opt, raw, value))
            i += 1 + opt.nargs
        return None

    def unknown(self, i: int, token: str) -> ArgProblem:
        if not token.startswith("-") or token == "-":
            before = self.items[-1] if self.items and self.items[-1].index + 1 + len(self.items[-1].raw) == i else None
            if before is not None and len(before.raw) == 1 and ":" in ((before.option.metavars or ("",))[0]):
                joined = f"{before.raw[0]}:{token}"
                return ArgProblem(i, token, "positional",
                                  f"unexpected argument {_quote(token)}: {before.spelling} takes one argument, "
                                  f"{before.option.metavars[0]} (write {_quote(joined)})", option=before.option)
            return ArgProblem(i, token, "positional",
                              f"unexpected argument {_quote(token)}: llama-server takes no positional arguments "
                              "(is it the value of the option before it?)")
        name, eq, _ = token.partition("=")
        if eq and find_option(name) is not None:
            opt = find_option(name)
            assert opt is not None
            return ArgProblem(i, token, "unknown-option",
                              f"llama-server has no {name}=VALUE form: write {name!r} and the value as two "
                              f"arguments", suggestions=(name,), option=opt)
        suggestions = suggest_options(token)
        hint = f" (did you mean {' or '.join(suggestions)}?)" if suggestions else ""
        return ArgProblem(i, token, "unknown-option", f"unknown llama-server option {token}{hint}",
                          suggestions=suggestions)

    def value(self, opt: ServerOption, token: str, text: str, index: int) -> tuple[Any, ArgProblem | None]:
        hint = (opt.metavars or ("a value",))[0]
        if _looks_like_option(text) and opt.kind in ("string", "path"):
            self.warn(index, text, "looks-like-option",
                      f"{token} takes {text!r} as its value ({hint}): is a value missing before it?", opt)
        if opt.kind == "choice":
            if opt.choices is not None and text not in opt.choices:
                close = tuple(difflib.get_close_matches(text, opt.choices, n=1, cutoff=0.6))
                also = f" (did you mean {close[0]}?)" if close else ""
                listed = ", ".join(c or '""' for c in opt.choices)
                return None, ArgProblem(index, text, "bad-value", f"{token} takes one of {listed}, not {text!r}{also}",
                                        suggestions=close, option=opt)
            return text, None
        if opt.kind in ("int", "float") and opt.parse:
            if text in opt.keywords:
                return text, None
            try:
                number, rest = read_number(text, opt.parse)
            except ValueError as exc:
                what = "a whole number" if opt.kind == "int" else "a number"
                words = f" or {', '.join(opt.keywords)}" if opt.keywords else ""
                why = "out of range" if str(exc) == "out of range" else f"not {what}"
                return None, ArgProblem(index, text, "bad-value",
                                        f"{token} takes {what}{words} ({hint}): {text!r} is {why}", option=opt)
            refusal = _refused(opt, number)
            if refusal is not None:
                return None, ArgProblem(index, text, "bad-value",
                                        f"llama-server refuses {token} {text}: it rejects {refusal}", option=opt)
            if rest.strip(_WS):
                self.warn(index, text, "trailing-text",
                          f"llama-server reads {text!r} as {number!r} for {token}, ignoring {rest!r}", opt)
            return number, None
        return text, None

    def store(self, item: ParsedArg) -> None:
        opt = item.option
        self.items.append(item)
        if opt.repeatable:
            gathered = self.values.setdefault(opt.name, [])
            if isinstance(item.value, list):
                gathered.extend(item.value)
            else:
                gathered.append(item.value)
            return
        if opt.name in self.values:
            self.warn(item.index, item.spelling, "repeated",
                      f"{opt.name} is given more than once: llama-server keeps only the last value", opt)
            del self.values[opt.name]  # the value moves to where the last occurrence is
        self.values[opt.name] = item.value

    def warn(self, index: int, arg: str, code: str, message: str, opt: ServerOption | None) -> None:
        self.warnings.append(ArgProblem(index, arg, code, message, severity="warning", option=opt))


def _checked(argv: Iterable[str]) -> tuple[_Checker, ArgProblem | None]:
    checker = _Checker(list(argv))
    return checker, checker.run()


def check_server_args(argv: Iterable[str]) -> ArgProblem | None:
    """The first problem llama-server would stop at in ``argv``, or None when it would accept it."""
    return _checked(argv)[1]


def parse_server_args(argv: Iterable[str]) -> ServerArgs:
    """``argv`` checked and read; raises :class:`ServerArgsError` where llama-server would refuse it."""
    checker, problem = _checked(argv)
    if problem is not None:
        raise ServerArgsError(problem)
    return ServerArgs(argv=tuple(checker.argv), items=tuple(checker.items), values=checker.values,
                      warnings=tuple(checker.warnings))
