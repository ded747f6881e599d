#!/usr/bin/env python3
"""Generate ``ggufpack/options/llama_server.py``: llama-server's options as data, read from llama.cpp's sources.

llama.cpp declares every command-line option once, in ``common_params_parser_init`` of
``common/arg.cpp``::

    add_opt(common_arg(
        {"-c", "--ctx-size"}, "N",
        string_format("size of the prompt context (default: %d, 0 = loaded from model)", params.n_ctx),
        [](common_params & params, int value) { params.n_ctx = value; }
    ).set_env("LLAMA_ARG_CTX_SIZE"));

This script tokenizes that function (a small C++ lexer: comments, raw strings, adjacent literals),
keeps the declarations llama-server sees (``LLAMA_EXAMPLE_SERVER`` or common to all, not excluded,
``if (ex == ...)`` branches taken for the server), and reads from each one: the spellings, the
negated spellings, the value hints, the environment variable, the help text (its ``string_format``
evaluated against the defaults of ``struct common_params`` in ``common/common.h``, with the
server's per-example defaults applied), and from the handler lambda: the value kind, closed choice
lists (``if (value == "a") ... else throw``), numeric keywords (``-ngl auto``), simple refusals
(``if (value < 0) throw``), whether a value is split on commas or repeated options accumulate,
whether the option exits (``--version``), was removed (``arg_removed``), or opens its value as a
file while parsing. What it cannot read it records as ``None``; it never guesses.

Usage::

    python3 scripts/llama_server_options.py            # regenerate from the installed llama-cpp-python's sources
    python3 scripts/llama_server_options.py --check    # exit 1 when the committed module is stale
    python3 scripts/llama_server_options.py --source /path/to/llama.cpp --output FILE
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "ggufpack" / "options" / "llama_server.py"
EXAMPLE = "LLAMA_EXAMPLE_SERVER"
COMMON = "LLAMA_EXAMPLE_COMMON"


class SourceError(Exception):
    """The sources hold a construct this script does not know: fix the script rather than guess."""


# --------------------------------------------------------------------------------------------- lexer


@dataclass(frozen=True)
class Tok:
    kind: str  # id, num, str, chr, punct, pp
    text: str  # the source text (for str: the decoded value)
    line: int


_PUNCT = sorted([
    "...", "<<=", ">>=", "->", "++", "--", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "+=", "-=", "*=", "/=",
    "%=", "&=", "|=", "^=", "::", "{", "}", "[", "]", "(", ")", ";", ":", ",", ".", "?", "~", "!", "+", "-", "*",
    "/", "%", "^", "&", "|", "=", "<", ">", "#",
], key=len, reverse=True)
_TOKEN_RE = re.compile(
    r"""(?P<ws>[ \t\r\f\v]+|\n)
    |(?P<comment>//[^\n]*|/\*.*?\*/)
    |(?P<raw>(?:u8|u|U|L)?R"(?P<delim>[^()\\ \t\n]{0,16})\((?P<rawbody>.*?)\)(?P=delim)")
    |(?P<str>(?:u8|u|U|L)?"(?:\\.|[^"\\\n])*")
    |(?P<chr>(?:u8|u|U|L)?'(?:\\.|[^'\\\n])+')
    |(?P<num>\.?\d(?:[eEpP][+-]|[\w.']|)*)
    |(?P<id>[A-Za-z_]\w*)
    |(?P<punct>""" + "|".join(re.escape(p) for p in _PUNCT) + ")",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b",
            "f": "\f", "v": "\v", "?": "?", "e": "\x1b"}


def _unescape(body: str) -> str:
    def one(m: re.Match[str]) -> str:
        esc = m.group(1)
        if esc[0] == "x":
            return chr(int(esc[1:], 16))
        if esc[0] in "01234567" and len(esc) > 1:
            return chr(int(esc, 8))
        return _ESCAPES.get(esc, esc)

    return re.sub(r"\\(x[0-9a-fA-F]+|[0-7]{1,3}|.)", one, body, flags=re.DOTALL)


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    pos, line, at_line_start = 0, 1, True
    while pos < len(text):
        if at_line_start:
            m = re.match(r"[ \t]*#(?:\\\n|[^\n])*", text[pos:])
            if m:  # a preprocessor line (with its continuations): one token
                toks.append(Tok("pp", m.group().strip(), line))
                line += m.group().count("\n")
                pos += m.end()
                continue
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise SourceError(f"line {line}: cannot read {text[pos:pos + 20]!r}")
        kind = m.lastgroup if m.lastgroup not in ("delim", "rawbody") else "raw"
        value = m.group()
        if kind == "ws":
            at_line_start = value == "\n"
        elif kind != "comment":
            at_line_start = False
            if kind == "raw":
                toks.append(Tok("str", m.group("rawbody"), line))
            elif kind == "str":
                toks.append(Tok("str", _unescape(value[value.index('"') + 1:-1]), line))
            else:
                toks.append(Tok(kind, value, line))
        line += value.count("\n")
        pos = m.end()
    return toks


def matching(toks: Sequence[Tok], i: int) -> int:
    """The index of the bracket closing the one at ``i``."""
    depth = 0
    for j in range(i, len(toks)):
        t = toks[j]
        if t.kind == "punct" and t.text in "([{":
            depth += 1
        elif t.kind == "punct" and t.text in ")]}":
            depth -= 1
            if depth == 0:
                return j
    raise SourceError(f"line {toks[i].line}: unbalanced {toks[i].text!r}")


def split_top(toks: Sequence[Tok], sep: str = ",") -> list[list[Tok]]:
    """``toks`` split at ``sep`` outside brackets."""
    parts: list[list[Tok]] = [[]]
    depth = 0
    for t in toks:
        if t.kind == "punct" and t.text in "([{":
            depth += 1
        elif t.kind == "punct" and t.text in ")]}":
            depth -= 1
        if depth == 0 and t.kind == "punct" and t.text == sep:
            parts.append([])
        else:
            parts[-1].append(t)
    return parts if parts != [[]] else []


def is_(t: Tok | None, text: str) -> bool:
    return t is not None and t.kind in ("punct", "id") and t.text == text


def source_text(toks: Sequence[Tok]) -> str:
    out = ""
    for t in toks:
        text = '"' + t.text.encode("unicode_escape").decode().replace('"', '\\"') + '"' if t.kind == "str" else t.text
        if out and (out[-1].isalnum() or out[-1] in "_\"") and (text[0].isalnum() or text[0] in "_\""):
            out += " "
        out += text
    return out


def statements(toks: Sequence[Tok]) -> Iterator[list[Tok]]:
    """The statements of a block body: ``...;``, or an ``if``/``for``/``while`` with its blocks, or a ``{...}``."""
    i = 0
    while i < len(toks):
        start = i
        t = toks[i]
        if t.kind == "pp":
            yield [t]
            i += 1
            continue
        if is_(t, "if") or is_(t, "for") or is_(t, "while"):
            while True:
                i = matching(toks, i + 1) + 1  # the condition
                i = _skip_branch(toks, i)
                if is_(toks[i] if i < len(toks) else None, "else"):
                    i += 1
                    if is_(toks[i], "if"):
                        continue
                    i = _skip_branch(toks, i)
                break
            yield list(toks[start:i])
            continue
        if is_(t, "{"):
            i = matching(toks, i) + 1
            yield list(toks[start:i])
            continue
        depth = 0
        while i < len(toks):
            u = toks[i]
            if u.kind == "punct" and u.text in "([{":
                depth += 1
            elif u.kind == "punct" and u.text in ")]}":
                depth -= 1
            elif depth == 0 and is_(u, ";"):
                break
            i += 1
        i += 1
        yield list(toks[start:i])


def _skip_branch(toks: Sequence[Tok], i: int) -> int:
    if is_(toks[i], "{"):
        return matching(toks, i) + 1
    for s in statements(toks[i:]):  # a single statement
        return i + len(s)
    return i


@dataclass
class IfChain:
    branches: list[tuple[list[Tok] | None, list[Tok]]]  # (condition or None for else, body)


def if_chain(stmt: Sequence[Tok]) -> IfChain | None:
    if not stmt or not is_(stmt[0], "if"):
        return None
    branches: list[tuple[list[Tok] | None, list[Tok]]] = []
    i = 0
    while True:
        close = matching(stmt, i + 1)
        cond = list(stmt[i + 2:close])
        end = _skip_branch(stmt, close + 1)
        body = list(stmt[close + 1:end])
        branches.append((cond, _unbrace(body)))
        i = end
        if i < len(stmt) and is_(stmt[i], "else"):
            if i + 1 < len(stmt) and is_(stmt[i + 1], "if"):
                i += 1
                continue
            body = list(stmt[i + 1:_skip_branch(stmt, i + 1)])
            branches.append((None, _unbrace(body)))
        return IfChain(branches)


def _unbrace(body: list[Tok]) -> list[Tok]:
    return body[1:-1] if body and is_(body[0], "{") else body


def find_function(toks: Sequence[Tok], name: str) -> tuple[list[Tok], list[Tok]] | None:
    """(parameter tokens, body tokens) of the first definition of function ``name`` in ``toks``."""
    for i, t in enumerate(toks):
        if t.kind == "id" and t.text == name and i + 1 < len(toks) and is_(toks[i + 1], "("):
            if i > 0 and (is_(toks[i - 1], ".") or is_(toks[i - 1], "->")):
                continue
            close = matching(toks, i + 1)
            j = close + 1
            while j < len(toks) and toks[j].kind == "id" and toks[j].text in ("const", "noexcept", "override"):
                j += 1
            if j < len(toks) and is_(toks[j], "{") and (i == 0 or not is_(toks[i - 1], "=")):
                return list(toks[i + 2:close]), list(toks[j + 1:matching(toks, j)])
    return None


# --------------------------------------------------------------------------------------------- values


class Unknown:
    """A value the script cannot compute from the sources (a call into the library, the machine, a local)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Unknown({self.text!r})"


@dataclass(frozen=True)
class Enum:
    name: str


@dataclass
class StructRef:
    path: str


#: unknown pieces inside evaluated text: \x01expr\x02 (shown as <expr>)
UNK_OPEN, UNK_CLOSE = "\x01", "\x02"
_PRI = {"PRId32": "d", "PRIi32": "i", "PRIu32": "u", "PRIx32": "x", "PRId64": "ld", "PRIi64": "li",
        "PRIu64": "lu", "PRIx64": "lx", "PRIdMAX": "jd", "PRIuMAX": "ju"}


def unknown_text(value: Any, text: str) -> str:
    """An unknown piece of text: its C++ expression (``?`` when that is too long to help a reader)."""
    return f"{UNK_OPEN}{text if len(text) <= 60 else '?'}{UNK_CLOSE}"


def c_format(fmt: str, args: list[Any], arg_texts: list[str]) -> str:
    """printf: conversions of known values done, unknown ones kept as their C++ expression."""
    out: list[str] = []
    it = iter(zip(args, arg_texts, strict=False))
    pos = 0
    for m in re.finditer(r"%([-+ #0]*)(\*|\d+)?(?:\.(\*|\d+))?(hh|h|ll|l|j|z|t|L)?([diouxXeEfFgGcs%])", fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, _length, conv = m.groups()
        if conv == "%":
            out.append("%")
            continue
        if width == "*" or prec == "*":
            raise SourceError(f"printf width/precision from arguments in {fmt!r}")
        value, text = next(it, (Unknown("?"), "?"))
        spec = "%" + flags + (width or "") + ("." + prec if prec is not None else "")
        if isinstance(value, bool) and conv in "diouxX":
            value = int(value)
        if isinstance(value, str) and conv == "s":
            out.append((spec + "s") % value)
        elif isinstance(value, int) and not isinstance(value, bool) and conv in "diouxXc":
            bits = 64 if _length in ("l", "ll", "j", "z", "t") else 32  # what the C varargs carry
            value &= (1 << bits) - 1
            if conv in "di" and value >= 1 << (bits - 1):
                value -= 1 << bits
            out.append((spec + ("d" if conv in "iu" else conv)) % value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and conv in "eEfFgG":
            out.append((spec + conv) % value)
        else:
            out.append(unknown_text(value, text))
    out.append(fmt[pos:])
    return "".join(out)


class Evaluator:
    """Evaluates the C++ expressions of option declarations (help texts, hints, conditions, defaults)."""

    def __init__(self, sources: Sources, scope: dict[str, Any], struct_paths: set[str]) -> None:
        self.sources = sources
        self.scope = scope  # "params.n_ctx" -> value; "ex" -> Enum
        self.struct_paths = struct_paths

    def eval(self, toks: Sequence[Tok]) -> Any:
        self.toks, self.i = list(toks), 0
        if not self.toks:
            return Unknown("")
        try:
            value = self.ternary()
        except (SourceError, IndexError, ZeroDivisionError, TypeError, ValueError, OverflowError):
            return Unknown(source_text(toks))
        if self.i != len(self.toks):
            return Unknown(source_text(toks))
        return value

    # recursive descent, C precedence
    def peek(self, offset: int = 0) -> Tok | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def take(self, text: str | None = None) -> Tok:
        t = self.toks[self.i]
        if text is not None and not is_(t, text):
            raise SourceError(f"expected {text!r} at line {t.line}")
        self.i += 1
        return t

    def ternary(self) -> Any:
        start = self.i
        cond = self.binary(0)
        if is_(self.peek(), "?"):
            self.take("?")
            yes = self.ternary()
            self.take(":")
            no = self.ternary()
            if isinstance(cond, Unknown):
                return yes if _same(yes, no) else Unknown(source_text(self.toks[start:self.i]))
            return yes if _truthy(cond) else no
        return cond

    _LEVELS = (("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Any:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() is not None and self.peek().kind == "punct" and self.peek().text in self._LEVELS[level]:
            op = self.take().text
            right = self.binary(level + 1)
            if isinstance(left, Enum) != isinstance(right, Enum):  # an enum against a number: its value
                left, right = self.enum_value(left), self.enum_value(right)
            left = _binop(op, left, right)
        return left

    _CAST_WORDS = frozenset({"double", "float", "int", "unsigned", "long", "size_t", "int32_t", "uint32_t",
                             "int64_t", "uint64_t", "char", "bool", "short"})

    def unary(self) -> Any:
        t = self.peek()
        if is_(t, "!"):
            self.take()
            v = self.unary()
            return v if isinstance(v, Unknown) else not _truthy(v)
        if is_(t, "-") or is_(t, "+"):
            self.take()
            v = self.unary()
            if isinstance(v, Unknown):
                return v
            if isinstance(v, (int, float)):
                return -v if t.text == "-" else v
            raise SourceError("unary minus on a non-number")
        if is_(t, "("):  # a cast?
            close = matching(self.toks, self.i)
            inner = self.toks[self.i + 1:close]
            if inner and all(u.kind == "id" and u.text in self._CAST_WORDS for u in inner):
                self.i = close + 1
                v = self.unary()
                words = {u.text for u in inner}
                if isinstance(v, Unknown):
                    return v
                if words & {"double", "float"}:
                    return float(v)
                return int(v)
        return self.postfix()

    def postfix(self) -> Any:
        start = self.i
        t = self.take()
        if t.kind == "str":
            text = t.text
            while self.peek() is not None and (self.peek().kind == "str" or (
                    self.peek().kind == "id" and self.peek().text in _PRI)):
                u = self.take()
                text += u.text if u.kind == "str" else _PRI[u.text]
            value: Any = text
        elif t.kind == "num":
            value = parse_number(t.text)
        elif is_(t, "("):
            value = self.ternary()
            self.take(")")
        elif is_(t, "{"):
            close = matching(self.toks, self.i - 1)
            items = split_top(self.toks[self.i:close])
            value = [Evaluator(self.sources, self.scope, self.struct_paths).eval(item) for item in items]
            self.i = close + 1
        elif t.kind == "id":
            name = t.text
            while is_(self.peek(), "::") and self.peek(1) is not None and self.peek(1).kind == "id":
                self.take()
                name += "::" + self.take().text
            if is_(self.peek(), "<"):  # a template argument list: string_split<std::string>
                close = self._template_close()
                if close is not None:
                    self.i = close + 1
            if is_(self.peek(), "("):
                close = matching(self.toks, self.i)
                arg_toks = split_top(self.toks[self.i + 1:close])
                self.i = close + 1
                value = self.call(name, arg_toks)
            else:
                value = self.name(name)
        else:
            raise SourceError(f"unexpected {t.text!r} at line {t.line}")
        while True:
            if is_(self.peek(), "."):
                self.take()
                member = self.take().text
                if is_(self.peek(), "("):
                    close = matching(self.toks, self.i)
                    if close != self.i + 1:
                        value = Unknown(source_text(self.toks[start:close + 1]))
                    else:
                        value = _method(value, member, source_text(self.toks[start:close + 1]))
                    self.i = close + 1
                elif isinstance(value, StructRef):
                    value = self.name(f"{value.path}.{member}")
                else:
                    value = Unknown(source_text(self.toks[start:self.i]))
            elif is_(self.peek(), "["):
                close = matching(self.toks, self.i)
                index = Evaluator(self.sources, self.scope, self.struct_paths).eval(self.toks[self.i + 1:close])
                self.i = close + 1
                if isinstance(value, list) and isinstance(index, int) and 0 <= index < len(value):
                    value = value[index]
                else:
                    value = Unknown(source_text(self.toks[start:self.i]))
            else:
                return value

    def _template_close(self) -> int | None:
        depth = 0
        for j in range(self.i, min(self.i + 12, len(self.toks))):
            if is_(self.toks[j], "<"):
                depth += 1
            elif is_(self.toks[j], ">"):
                depth -= 1
                if depth == 0:
                    return j
            elif self.toks[j].kind == "punct" and self.toks[j].text not in ("::", ",", "*", "&"):
                return None
        return None

    def enum_value(self, value: Any) -> Any:
        if isinstance(value, Enum):
            return self.sources.enums.get(value.name, Unknown(value.name))
        return value

    def name(self, name: str) -> Any:
        if name in ("true", "false"):
            return name == "true"
        if name == "nullptr":
            return None
        if name in self.scope:
            return self.scope[name]
        if name in self.struct_paths:
            return StructRef(name)
        if name in self.sources.macros:
            return self.sources.macros[name]
        if name in self.sources.enums or re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            return Enum(name)
        return Unknown(name)

    def call(self, name: str, arg_toks: list[list[Tok]]) -> Any:
        sub = Evaluator(self.sources, self.scope, self.struct_paths)
        args = [sub.eval(a) for a in arg_toks]
        texts = [source_text(a) for a in arg_toks]
        whole = f"{name}({', '.join(texts)})"
        if name == "string_format" and args and isinstance(args[0], str):
            return c_format(args[0], [self.enum_value(a) for a in args[1:]], texts[1:])
        if name in ("std::string",) and len(args) == 1 and isinstance(args[0], str):
            return args[0]
        if name == "std::to_string" and len(args) == 1 and isinstance(args[0], (int, float)):
            return str(args[0])
        if name == "ggml_type_name" and len(args) == 1 and isinstance(args[0], Enum):
            return self.sources.ggml_type_names.get(args[0].name, Unknown(whole))
        if len(args) == 1 and isinstance(args[0], Enum):  # an enum's name function: a switch of returns
            named = self.sources.enum_name(name, args[0].name)
            if named is not None:
                return named
        return Unknown(whole)


def _truthy(v: Any) -> bool:
    if isinstance(v, Enum):
        raise SourceError(f"truth of enum {v.name}")
    return bool(v)


def _same(a: Any, b: Any) -> bool:
    return not isinstance(a, Unknown) and not isinstance(b, Unknown) and a == b


def _binop(op: str, a: Any, b: Any) -> Any:
    if isinstance(a, Unknown) or isinstance(b, Unknown):
        if op in ("&&", "||"):  # short circuit on a known side
            known = b if isinstance(a, Unknown) else a
            if not isinstance(known, Unknown) and not isinstance(known, Enum):
                if op == "&&" and not _truthy(known):
                    return False
                if op == "||" and _truthy(known):
                    return True
        return Unknown(f"({getattr(a, 'text', a)} {op} {getattr(b, 'text', b)})")
    if op in ("==", "!="):
        if isinstance(a, Enum) != isinstance(b, Enum):
            return Unknown(f"({a} {op} {b})")
        return (a == b) == (op == "==")
    if isinstance(a, Enum) or isinstance(b, Enum):
        return Unknown(f"({a} {op} {b})")
    if op == "&&":
        return _truthy(a) and _truthy(b)
    if op == "||":
        return _truthy(a) or _truthy(b)
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    if isinstance(a, str) or isinstance(b, str):
        return Unknown(f"({a!r} {op} {b!r})")
    ops: dict[str, Callable[[Any, Any], Any]] = {
        "<": lambda x, y: x < y, ">": lambda x, y: x > y, "<=": lambda x, y: x <= y, ">=": lambda x, y: x >= y,
        "+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
        "/": lambda x, y: int(x / y) if isinstance(x, int) and isinstance(y, int) else x / y,
        "%": lambda x, y: int(math.fmod(x, y)),
    }
    return ops[op](a, b)


def _method(value: Any, member: str, text: str) -> Any:
    if isinstance(value, str) and member == "c_str":
        return value
    if isinstance(value, (str, list)) and member == "empty":
        return len(value) == 0
    if isinstance(value, (str, list)) and member == "size":
        return len(value)
    return Unknown(text)


def parse_number(text: str) -> int | float:
    t = text.replace("'", "")
    if re.fullmatch(r"0[xX][0-9a-fA-F]+[uUlL]*", t):
        return int(t.rstrip("uUlL"), 16)
    if re.fullmatch(r"\d+[uUlL]*", t):
        return int(t.rstrip("uUlL"), 8 if len(t.rstrip("uUlL")) > 1 and t.startswith("0") else 10)
    m = re.fullmatch(r"((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[fFlL]?", t)
    if m:
        return float(m.group(1))
    raise SourceError(f"number {text!r}")


# --------------------------------------------------------------------------------------------- sources


@dataclass
class Sources:
    root: Path
    arg_toks: list[Tok] = field(default_factory=list)
    helper_toks: list[Tok] = field(default_factory=list)  # common/*.cpp and src/llama.cpp, for helpers
    macros: dict[str, int | float] = field(default_factory=dict)
    enums: dict[str, int] = field(default_factory=dict)
    ggml_type_names: dict[str, str] = field(default_factory=dict)
    _name_cache: dict[tuple[str, str], str | None] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path) -> Sources:
        self = cls(root=root)
        self.arg_toks = tokenize(self.read("common/arg.cpp"))
        helpers = [p for p in sorted((root / "common").glob("*.cpp")) if p.name != "arg.cpp"]
        helpers += [root / "src" / "llama.cpp"]
        for path in helpers:
            if path.is_file():
                self.helper_toks += tokenize(path.read_text(encoding="utf-8", errors="replace"))
        for rel in ("include/llama.h", "common/common.h", "ggml/include/ggml.h", "common/arg.cpp"):
            if (root / rel).is_file():
                for m in re.finditer(r"^[ \t]*#define[ \t]+(\w+)[ \t]+(\(?-?(?:0[xX][0-9a-fA-F]+|[\d.]+)[uUlLfF]*\)?)"
                                     r"[ \t]*(?://.*)?$", self.read(rel), re.MULTILINE):
                    with contextlib.suppress(SourceError):
                        self.macros[m.group(1)] = parse_number(m.group(2).strip("()"))
        for rel in ("ggml/include/ggml.h", "include/llama.h"):
            if (root / rel).is_file():
                self._enum_values(self.read(rel))
        ggml_c = root / "ggml" / "src" / "ggml.c"
        if ggml_c.is_file():
            traits = r"\[(GGML_TYPE_\w+)\]\s*=\s*\{[^}]*?\.type_name\s*=\s*\"([^\"]+)\""  # type_traits
            for m in re.finditer(traits, ggml_c.read_text()):
                self.ggml_type_names[m.group(1)] = m.group(2)
        return self

    def read(self, rel: str) -> str:
        path = self.root / rel
        if not path.is_file():
            raise SourceError(f"{path} is missing: is {self.root} a llama.cpp source tree?")
        return path.read_text(encoding="utf-8", errors="replace")

    def _enum_values(self, text: str) -> None:
        for body in re.findall(r"\benum\s+\w*\s*(?::\s*\w+\s*)?\{([^}]*)\}", text):
            value = -1
            for item in re.sub(r"//[^\n]*|/\*.*?\*/", "", body, flags=re.DOTALL).split(","):
                m = re.fullmatch(r"\s*(\w+)\s*(?:=\s*(-?\s*\w+))?\s*", item)
                if not m:
                    break
                if m.group(2) is not None:
                    raw = m.group(2).replace(" ", "")
                    try:
                        value = int(parse_number(raw.lstrip("-"))) * (-1 if raw.startswith("-") else 1)
                    except SourceError:
                        if raw not in self.enums:
                            break
                        value = self.enums[raw]
                else:
                    value += 1
                self.enums.setdefault(m.group(1), value)

    def enum_name(self, function: str, constant: str) -> str | None:
        """``function(constant)`` for a function that is a ``switch`` of ``case X: return "name";``."""
        key = (function, constant)
        if key not in self._name_cache:
            found = find_function(self.helper_toks, function)
            result = None
            if found is not None:
                body = found[1]
                for i in range(len(body) - 4):
                    if (is_(body[i], "case") and body[i + 1].text == constant and is_(body[i + 2], ":")
                            and is_(body[i + 3], "return") and body[i + 4].kind == "str"):
                        result = body[i + 4].text
                        break
            self._name_cache[key] = result
        return self._name_cache[key]

    def helper(self, name: str) -> tuple[list[Tok], list[Tok]] | None:
        return find_function(self.arg_toks, name) or find_function(self.helper_toks, name)

    def version(self) -> tuple[str | None, str | None]:
        """(llama-cpp-python version when the tree is an sdist's vendor/llama.cpp, llama.cpp commit)."""
        sdist = None
        pkg_info = self.root.parent.parent / "PKG-INFO"
        if self.root.parent.name == "vendor" and pkg_info.is_file():
            headers = Parser().parsestr(pkg_info.read_text(encoding="utf-8", errors="replace"), headersonly=True)
            if (headers.get("Name") or "").replace("-", "_").lower() == "llama_cpp_python":
                sdist = headers.get("Version")
        commit = git_head(self.root)
        if commit is None and sdist is not None:  # the sdist's changelog names the llama.cpp it vendors
            changelog = self.root.parent.parent / "CHANGELOG.md"
            if changelog.is_file():
                section = re.search(rf"^## \[{re.escape(sdist)}\](.*?)(?=^## \[)", changelog.read_text(),
                                    re.MULTILINE | re.DOTALL)
                m = section and re.search(r"llama\.cpp@([0-9a-f]{7,40})", section.group(1))
                commit = m.group(1) if m else None
        return sdist, commit


def git_head(tree: Path) -> str | None:
    """The commit checked out in ``tree``, read from its ``.git`` (a directory or a ``gitdir:`` file)."""
    dot_git = tree / ".git"
    if dot_git.is_file():
        m = re.match(r"gitdir:\s*(.+)", dot_git.read_text().strip())
        if not m:
            return None
        dot_git = (tree / m.group(1)).resolve()
    head = dot_git / "HEAD"
    if not head.is_file():
        return None
    text = head.read_text().strip()
    if re.fullmatch(r"[0-9a-f]{40}", text):
        return text
    m = re.fullmatch(r"ref:\s*(\S+)", text)
    if not m:
        return None
    ref = dot_git / m.group(1)
    if ref.is_file():
        return ref.read_text().strip()
    packed = dot_git / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            if line.endswith(" " + m.group(1)):
                return line.split()[0]
    return None


# --------------------------------------------------------------------------------------------- defaults


def struct_defaults(sources: Sources) -> tuple[dict[str, Any], set[str]]:
    """``params.<path>`` -> default value of ``struct common_params`` (nested structs flattened)."""
    toks = tokenize(sources.read("common/common.h"))
    structs: dict[str, list[Tok]] = {}
    for i, t in enumerate(toks):
        if is_(t, "struct") and i + 2 < len(toks) and toks[i + 1].kind == "id" and is_(toks[i + 2], "{"):
            structs[toks[i + 1].text] = toks[i + 3:matching(toks, i + 2)]
    if "common_params" not in structs:
        raise SourceError("no struct common_params in common/common.h")
    scope: dict[str, Any] = {}
    paths: set[str] = set()

    def walk(struct: str, prefix: str) -> None:
        paths.add(prefix)
        local: dict[str, Any] = {}
        for stmt in statements(structs[struct]):
            member = _member(stmt)
            if member is None:
                continue
            type_toks, name, init = member
            type_name = next((u.text for u in type_toks if u.kind == "id" and u.text not in ("struct", "enum",
                                                                                            "const")), "")
            if type_name in structs and init is None:
                walk(type_name, f"{prefix}.{name}")
                continue
            if init is not None:
                braced_scalar = is_(init[0], "{") and _scalar_type(type_toks) and len(split_top(init[1:-1])) == 1
                value = Evaluator(sources, {**scope, **local}, paths).eval(init[1:-1] if braced_scalar else init)
            elif _type_text(type_toks).startswith("std::string"):
                value = ""
            elif _type_text(type_toks).startswith(("std::vector", "std::set", "std::map", "std::list")):
                value = []
            else:
                value = Unknown(f"{prefix}.{name}")
            local[name] = value
            scope[f"{prefix}.{name}"] = value

    walk("common_params", "params")
    return scope, paths


def _type_text(type_toks: Sequence[Tok]) -> str:
    return "".join(t.text for t in type_toks if t.text not in ("struct", "enum", "const"))


def _scalar_type(type_toks: Sequence[Tok]) -> bool:
    return not _type_text(type_toks).startswith("std::")


def _member(stmt: Sequence[Tok]) -> tuple[list[Tok], str, list[Tok] | None] | None:
    """(type, name, initializer) of a data member declaration; None for functions, arrays, others."""
    if not stmt or not is_(stmt[-1], ";") or stmt[0].kind != "id" or stmt[0].text in (
            "using", "typedef", "friend", "static", "return"):
        return None
    body = stmt[:-1]
    for i, t in enumerate(body):
        if is_(t, "(") or is_(t, "["):
            return None  # a function or an array
        if is_(t, "=") or (is_(t, "{") and i > 0 and body[i - 1].kind == "id"):
            if i == 0 or body[i - 1].kind != "id":
                return None
            init = list(body[i + 1:]) if is_(t, "=") else list(body[i:])
            return list(body[:i - 1]), body[i - 1].text, init
        if is_(t, "<"):
            depth = 0
            for j in range(i, len(body)):
                depth += is_(body[j], "<") - is_(body[j], ">")
                if depth == 0:
                    break
    if len(body) >= 2 and body[-1].kind == "id":
        return list(body[:-1]), body[-1].text, None
    return None


# --------------------------------------------------------------------------------------------- options


@dataclass
class Decl:
    line: int
    spellings: list[str]
    negations: list[str]
    hints: list[Any]
    help: Any
    params: list[str]  # handler parameter types after common_params &
    param_names: list[str]
    body: list[Tok]
    examples: set[str]
    excludes: set[str]
    env: str | None
    sampling: bool = False
    spec: bool = False
    preset_only: bool = False


def parser_init_body(sources: Sources) -> list[Tok]:
    found = find_function(sources.arg_toks, "common_params_parser_init")
    if found is None:
        raise SourceError("common_params_parser_init not found in common/arg.cpp")
    return found[1]


def static_example_lists(sources: Sources) -> dict[str, set[str]]:
    """``static std::initializer_list<enum llama_example> NAME = {...};`` of arg.cpp."""
    lists: dict[str, set[str]] = {}
    toks = sources.arg_toks
    for i in range(len(toks) - 3):
        if is_(toks[i], "llama_example") and is_(toks[i + 1], ">") and toks[i + 2].kind == "id" and is_(
                toks[i + 3], "="):
            close = matching(toks, i + 4)
            lists[toks[i + 2].text] = {t.text for t in toks[i + 5:close] if t.kind == "id"}
    return lists


def collect(sources: Sources) -> tuple[list[Decl], dict[str, Any], set[str]]:
    """The declarations llama-server sees, in source order, and the server's defaults."""
    scope, paths = struct_defaults(sources)
    scope["ex"] = Enum(EXAMPLE)
    lists = static_example_lists(sources)
    decls: list[Decl] = []

    def run(body: Sequence[Tok]) -> None:
        for stmt in statements(body):
            first = stmt[0]
            if first.kind == "pp":
                raise SourceError(f"arg.cpp line {first.line}: preprocessor line inside the option list: "
                                  f"{first.text!r}; teach the script what it means")
            chain = if_chain(stmt)
            if chain is not None:
                for cond, branch in chain.branches:
                    if cond is not None:
                        value = Evaluator(sources, scope, paths).eval(cond)
                        if isinstance(value, Unknown):
                            if any(is_(t, "add_opt") for t in branch):
                                raise SourceError(f"arg.cpp line {first.line}: cannot decide "
                                                  f"`if ({source_text(cond)})` around options")
                            break
                        if not _truthy(value):
                            continue
                    run(branch)
                    break
                continue
            if is_(first, "for") or is_(first, "while") or is_(first, "{"):
                if any(is_(t, "add_opt") for t in stmt):
                    raise SourceError(f"arg.cpp line {first.line}: options declared in a loop or block")
                continue
            if is_(first, "add_opt") and is_(stmt[1], "("):
                decl = declaration(sources, stmt[2:matching(stmt, 1)], scope, paths, lists)
                if (decl.examples & {EXAMPLE, COMMON}) and EXAMPLE not in decl.excludes:
                    decls.append(decl)
                continue
            if any(is_(t, "add_opt") for t in stmt[1:]) and not is_(first, "auto"):
                raise SourceError(f"arg.cpp line {first.line}: add_opt in an unknown statement")
            # params.X = V; (per-example defaults) changes what the help texts print
            if is_(first, "params") and len(stmt) > 3:
                eq = next((k for k, t in enumerate(stmt) if is_(t, "=")), None)
                if eq is not None and all(is_(t, ".") or t.kind == "id" for t in stmt[:eq]):
                    path = "".join(t.text for t in stmt[:eq])
                    scope[path] = Evaluator(sources, scope, paths).eval(stmt[eq + 1:-1])

    run(parser_init_body(sources))
    return decls, scope, paths


def declaration(sources: Sources, toks: list[Tok], scope: dict[str, Any], paths: set[str],
                lists: dict[str, set[str]]) -> Decl:
    if not is_(toks[0], "common_arg") or not is_(toks[1], "("):
        raise SourceError(f"arg.cpp line {toks[0].line}: add_opt of something other than common_arg(...)")
    close = matching(toks, 1)
    args = split_top(toks[2:close])
    chained = toks[close + 1:]
    line = toks[0].line
    ev = Evaluator(sources, scope, paths)

    def strings(part: list[Tok]) -> list[str]:
        if not (part and is_(part[0], "{") and is_(part[-1], "}")):
            raise SourceError(f"arg.cpp line {line}: expected a {{...}} list of spellings")
        items = split_top(part[1:-1])
        if not all(len(item) == 1 and item[0].kind == "str" for item in items):
            raise SourceError(f"arg.cpp line {line}: spellings that are not string literals")
        return [item[0].text for item in items]

    lam = args[-1]
    if not is_(lam[0], "["):
        raise SourceError(f"arg.cpp line {line}: the handler is not a lambda")
    p_open = next(k for k, t in enumerate(lam) if is_(t, "("))
    p_close = matching(lam, p_open)
    lambda_params = split_top(lam[p_open + 1:p_close])
    body_open = next(k for k in range(p_close, len(lam)) if is_(lam[k], "{"))
    body = lam[body_open + 1:matching(lam, body_open)]
    types, names = [], []
    for param in lambda_params[1:]:
        ids = [t.text for t in param if t.kind == "id"]
        words = set(ids)
        kind = "int" if "int" in words else "bool" if "bool" in words else "string" if "string" in words else None
        if kind is None:
            raise SourceError(f"arg.cpp line {line}: handler parameter {source_text(param)!r}")
        types.append(kind)
        has_name = len(ids) > 1 and ids[-1] not in ("int", "bool", "string")
        names.append(ids[-1] if has_name else "value")
    spellings = strings(args[0])
    negations: list[str] = []
    middle = args[1:-1]
    if types == ["bool"]:
        negations = strings(middle[0])
        middle = middle[1:]
    expected = {(): 1, ("bool",): 1, ("int",): 2, ("string",): 2, ("string", "string"): 3}.get(tuple(types))
    if expected is None or len(middle) != expected:
        raise SourceError(f"arg.cpp line {line}: a common_arg form this script does not know "
                          f"({len(args)} arguments, handler taking {types})")
    hints = [ev.eval(h) for h in middle[:-1]]
    help_value = ev.eval(middle[-1])
    decl = Decl(line=line, spellings=spellings, negations=negations, hints=hints, help=help_value, params=types,
                param_names=names, body=body, examples={COMMON}, excludes=set(), env=None)
    i = 0
    while i < len(chained):
        if not (is_(chained[i], ".") and chained[i + 1].kind == "id" and is_(chained[i + 2], "(")):
            raise SourceError(f"arg.cpp line {line}: unexpected {source_text(chained[i:i + 3])!r} after common_arg")
        method = chained[i + 1].text
        c = matching(chained, i + 2)
        inner = chained[i + 3:c]
        if method in ("set_examples", "set_excludes"):
            if inner and is_(inner[0], "{"):
                names_ = {t.text for t in inner if t.kind == "id"}
            elif len(inner) == 1 and inner[0].text in lists:
                names_ = set(lists[inner[0].text])
            else:
                raise SourceError(f"arg.cpp line {line}: {method}({source_text(inner)})")
            if method == "set_examples":
                decl.examples = names_
            else:
                decl.excludes = names_
        elif method == "set_env":
            decl.env = inner[0].text if len(inner) == 1 and inner[0].kind == "str" else None
        elif method in ("set_sampling", "set_spec", "set_preset_only"):
            setattr(decl, {"set_sampling": "sampling", "set_spec": "spec", "set_preset_only": "preset_only"}[method],
                    True)
        else:
            raise SourceError(f"arg.cpp line {line}: unknown common_arg method {method}")
        i = c + 1
    return decl


# --------------------------------------------------------------------------------------------- handler analysis

_TRUTHY = {"is_truthy": ("on", "enabled", "true", "1"), "is_falsey": ("off", "disabled", "false", "0"),
           "is_autoy": ("auto", "-1")}
_NUMBER_PARSERS = ("stoi", "stol", "stoll", "stoul", "stoull", "stof", "stod", "stold")


def _truthy_sets(sources: Sources) -> dict[str, tuple[str, ...]]:
    """is_truthy & co., read from arg.cpp (``value == "on" || ...``), checked against what the script knows."""
    found: dict[str, tuple[str, ...]] = {}
    for name in _TRUTHY:
        fn = find_function(sources.arg_toks, f"common_arg_utils::{name}") or find_function(sources.arg_toks, name)
        if fn is None:
            continue
        found[name] = tuple(t.text for t in fn[1] if t.kind == "str")
    return found or dict(_TRUTHY)


@dataclass
class ValueRule:
    kind: str = "string"
    parse: str | None = None
    choices: tuple[str, ...] | None = None
    keywords: tuple[str, ...] = ()
    refuse_if: tuple[tuple[str, float | int | None], ...] = ()


def literal_condition(cond: Sequence[Tok], param: str, truthy: dict[str, tuple[str, ...]]) -> list[str] | None:
    """The literals of ``param == "a" || is_truthy(param) || ...``; None for any other condition."""
    found: list[str] = []
    for part in split_top(cond, "||"):
        if len(part) == 3 and is_(part[0], param) and is_(part[1], "==") and part[2].kind == "str":
            found.append(part[2].text)
        elif len(part) == 3 and part[0].kind == "str" and is_(part[1], "==") and is_(part[2], param):
            found.append(part[0].text)
        elif (len(part) == 4 and part[0].text in truthy and is_(part[1], "(") and is_(part[2], param)
              and is_(part[3], ")")):
            found.extend(truthy[part[0].text])
        else:
            return None
    return found


def number_parse(toks: Sequence[Tok], param: str) -> str | None:
    """``stoi`` when ``std::stoi(param)`` appears in ``toks`` (the first such parser)."""
    for i in range(len(toks) - 5):
        if (is_(toks[i], "std") and is_(toks[i + 1], "::") and toks[i + 2].text in _NUMBER_PARSERS
                and is_(toks[i + 3], "(") and is_(toks[i + 4], param) and is_(toks[i + 5], ")")):
            return toks[i + 2].text
    return None


def has_call(toks: Sequence[Tok], *names: str) -> bool:
    return any(t.kind == "id" and t.text in names and i + 1 < len(toks) and is_(toks[i + 1], "(")
               for i, t in enumerate(toks))


def refusals(sources: Sources, body: Sequence[Tok], names: set[str]) -> tuple[tuple[str, Any], ...]:
    """``if (value < 0 || value > 10) { throw ... }`` -> (("<", 0), (">", 10)): values llama.cpp refuses."""
    out: list[tuple[str, Any]] = []
    for stmt in statements(body):
        chain = if_chain(stmt)
        if chain is None or len(chain.branches) != 1 or chain.branches[0][0] is None:
            continue
        cond, block = chain.branches[0]
        if not (block and (is_(block[0], "throw") or is_(block[0], "arg_removed"))):
            continue
        for part in split_top(cond, "||"):
            if len(part) >= 3 and part[0].kind == "id" and part[0].text in names and part[1].text in (
                    "<", ">", "<=", ">=", "==", "!="):
                bound = Evaluator(sources, {}, set()).eval(part[2:])
                if isinstance(bound, Enum):
                    bound = sources.enums.get(bound.name, Unknown(bound.name))
                if isinstance(bound, (int, float)) and not isinstance(bound, bool):
                    out.append((part[1].text, bound))
            elif (len(part) == 7 and is_(part[0], "!") and is_(part[1], "std") and is_(part[3], "isfinite")
                  and part[5].text in names):
                out.append(("nonfinite", None))
    return tuple(out)


def number_aliases(body: Sequence[Tok], param: str) -> set[str]:
    """``param`` and the locals set from ``std::stof(param)``: the names a refusal may test."""
    names = {param}
    for stmt in statements(body):
        eq = next((k for k, t in enumerate(stmt) if is_(t, "=")), None)
        if eq and stmt[eq - 1].kind == "id" and number_parse(stmt[eq + 1:], param):
            names.add(stmt[eq - 1].text)
    return names


def analyse_string(sources: Sources, body: Sequence[Tok], param: str, truthy: dict[str, tuple[str, ...]],
                   depth: int = 0) -> ValueRule:
    """What a ``const std::string &`` handler accepts."""
    literals: list[str] = []
    stmts = list(statements(body))
    for n, stmt in enumerate(stmts):
        chain = if_chain(stmt)
        if chain is None:
            break
        conds = [literal_condition(c, param, truthy) if c is not None else None for c, _ in chain.branches]
        if any(c is None for c, (cond, _) in zip(conds, chain.branches, strict=True) if cond is not None):
            break
        for c in conds:
            literals.extend(c or [])
        last_cond, last_body = chain.branches[-1]
        if last_cond is None:  # a final else: refuses, or reads a number
            parser = number_parse(last_body, param)
            if parser is not None:
                return ValueRule(kind=_number_kind(parser), parse=parser, keywords=tuple(_unique(literals)),
                                 refuse_if=refusals(sources, body, number_aliases(body, param)))
            if last_body and is_(last_body[0], "throw"):
                return ValueRule(kind="choice", choices=tuple(_unique(literals)))
            return ValueRule()
        if not all(b and any(is_(t, "return") for t in b) for _, b in chain.branches):
            return ValueRule()  # the literals fall through to code that takes any value
        rest = stmts[n + 1:]
        if rest and is_(rest[0][0], "throw"):
            return ValueRule(kind="choice", choices=tuple(_unique(literals)))
    if literals:
        return ValueRule()
    parser = number_parse(body, param)
    if parser is not None and _reads_whole_value(stmts, param):
        return ValueRule(kind=_number_kind(parser), parse=parser,
                         refuse_if=refusals(sources, body, number_aliases(body, param)))
    # params.x = helper(value); with a helper of its own: its rules
    call = _calls_helper(stmts[0], param) if depth == 0 and stmts else None
    if call is not None:
        looped = _looped_names(sources, call)
        if looped is not None:
            return ValueRule(kind="choice", choices=looped)
        found = sources.helper(call)
        if found is not None:
            helper_params = split_top(found[0])
            if len(helper_params) == 1 and "string" in {t.text for t in helper_params[0]}:
                rule = analyse_string(sources, found[1], helper_params[0][-1].text, truthy, depth + 1)
                if rule.kind == "choice":
                    return rule
    return ValueRule()


def _reads_whole_value(stmts: list[list[Tok]], param: str) -> bool:
    """Every use of ``param`` is ``std::stoX(param)``: the value is a number, nothing else."""
    for stmt in stmts:
        for i, t in enumerate(stmt):
            if is_(t, param) and not (i >= 4 and stmt[i - 2].text in _NUMBER_PARSERS and is_(stmt[i - 1], "(")):
                return False
    return True


def _calls_helper(stmt: Sequence[Tok], param: str) -> str | None:
    """``params.x = NAME(param);`` -> NAME."""
    eq = next((k for k, t in enumerate(stmt) if is_(t, "=")), None)
    if eq is None:
        return None
    rhs = stmt[eq + 1:]
    if len(rhs) == 5 and rhs[0].kind == "id" and is_(rhs[1], "(") and is_(rhs[2], param) and is_(rhs[3], ")"):
        return rhs[0].text
    return None


def _looped_names(sources: Sources, helper: str) -> tuple[str, ...] | None:
    """A helper ``for (type : LIST) if (ggml_type_name(type) == s) return type; throw``: the ggml names of LIST."""
    found = sources.helper(helper)
    if found is None:
        return None
    body = found[1]
    ids = [t.text for t in body]
    if not (body and is_(body[0], "for") and "ggml_type_name" in ids and "throw" in ids):
        return None
    colon = next((k for k, t in enumerate(body) if is_(t, ":")), None)
    if colon is None or body[colon + 1].kind != "id":
        return None
    list_name = body[colon + 1].text
    toks = sources.arg_toks
    for i in range(len(toks) - 2):
        if is_(toks[i], list_name) and is_(toks[i + 1], "=") and is_(toks[i + 2], "{"):
            items = [t.text for t in toks[i + 3:matching(toks, i + 2)] if t.kind == "id"]
            names = [sources.ggml_type_names.get(item) for item in items]
            return tuple(names) if all(names) else None  # type: ignore[arg-type]
    return None


def _number_kind(parser: str) -> str:
    return "float" if parser in ("stof", "stod", "stold") else "int"


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------- records

_PATH_HINTS = {"FNAME", "FILE", "PATH", "DIR", "JINJA_TEMPLATE_FILE"}


def help_text(value: Any) -> str:
    if isinstance(value, Unknown):
        return unknown_text(value, value.text)
    if not isinstance(value, str):
        return f"{UNK_OPEN}{value!r}{UNK_CLOSE}"
    return value


def shown_text(text: str) -> str:
    return text.replace(UNK_OPEN, "<").replace(UNK_CLOSE, ">")


def help_default(text: str, kind: str) -> str | None:
    """What the help says after ``default:``, up to ``)`` or the line's end, and for a value that is
    not text up to a ``,`` or ``;`` too; None when the help says nothing of a default."""
    m = re.search(r"\bdefault:\s*([^\n]*)", text)
    if not m:
        return None
    rest = m.group(1)
    if rest[:1] in ("'", '"'):
        q = rest.find(rest[0], 1)
        return rest[:q + 1] if q > 0 else rest
    depth, out = 0, ""
    for ch in rest:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            if depth == 0:
                break
            depth -= 1
        elif ch in ",;" and depth == 0 and kind not in ("string", "path"):
            break
        out += ch
    return out.strip()


_NOT_VALUES = frozenset({"none", "unused", "empty", "disabled", "unset"})


def typed_default(raw: str, kind: str, rule: ValueRule, stored: Any) -> Any:
    """The default as a value of the option's kind (``stored``: the common.h value the handler sets),
    or None when the words are not a value."""
    if UNK_OPEN in raw:
        return None
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    word = raw[1:-1] if quoted else raw
    if kind == "flag":
        return {"true": True, "enabled": True, "on": True, "false": False, "disabled": False, "off": False}.get(word)
    if kind in ("int", "float"):
        if word in rule.keywords:
            return word
        m = re.match(r"[-+]?(\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?=\s|$)", word)
        if not m:
            return None
        if kind == "int":
            return int(m.group()) if re.fullmatch(r"[-+]?\d+", m.group()) else None
        return float(m.group())
    if kind == "choice":
        return word if rule.choices and word in rule.choices else None
    if quoted or (isinstance(stored, str) and word == stored):
        return word
    return word if word and " " not in word and word not in _NOT_VALUES else None


def simple_target(body: Sequence[Tok], param: str) -> tuple[str, str] | None:
    """The body ``params.a.b = <param|!param|std::stoX(param)|true|false>;`` -> ("params.a.b", form)."""
    stmts = list(statements(body))
    if len(stmts) != 1:
        return None
    stmt = stmts[0]
    eq = next((k for k, t in enumerate(stmt) if is_(t, "=")), None)
    if eq is None or not all(is_(t, ".") or t.kind == "id" for t in stmt[:eq]) or not is_(stmt[0], "params"):
        return None
    rhs = source_text(stmt[eq + 1:-1])
    path = "".join(t.text for t in stmt[:eq])
    if rhs in (param, f"!{param}", "true", "false") or re.fullmatch(rf"std::sto\w+\({param}\)", rhs):
        return path, rhs
    return None


def record(sources: Sources, decl: Decl, scope: dict[str, Any], truthy: dict[str, tuple[str, ...]]) -> dict:
    param = decl.param_names[0] if decl.param_names else "value"
    removed = None
    if has_call(decl.body, "arg_removed"):
        msg = next((t.text for t in decl.body if t.kind == "str"), "")
        prefix = _arg_removed_prefix(sources)
        removed = (prefix + msg).strip()
    rule = ValueRule()
    if decl.params == ["int"]:
        rule = ValueRule(kind="int", parse="stoi", refuse_if=refusals(sources, decl.body, {param}))
    elif decl.params == ["string"]:
        rule = analyse_string(sources, decl.body, param, truthy)
    elif decl.params == ["string", "string"]:
        parsers = {number_parse(decl.body, n) for n in decl.param_names}
        if len(parsers) == 1 and None not in parsers:
            parser = parsers.pop()
            rule = ValueRule(kind=_number_kind(parser), parse=parser)
    kind = rule.kind
    hints = [h if isinstance(h, str) else None for h in decl.hints]
    if decl.params in ([], ["bool"]):
        kind = "flag"
    elif kind == "string" and hints and hints[0] in _PATH_HINTS:
        kind = "path"
    text = help_text(decl.help)
    raw_default = help_default(text, kind)
    target = simple_target(decl.body, param)
    default: Any = None
    if decl.params == []:
        default = False
    elif raw_default is not None:
        stored = scope.get(target[0]) if target is not None and target[1] == param else None
        default = typed_default(raw_default, kind, rule, stored)
    elif target is not None and target[0] in scope:  # no default in the help: common.h's, if the handler stores
        value = scope[target[0]]
        form = target[1]
        if isinstance(value, bool) and decl.params == ["bool"] and form in (param, f"!{param}"):
            default = value if form == param else not value
        elif kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            default = value
        elif kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            default = float(value)
        elif kind in ("string", "path") and isinstance(value, str) and form == param:
            default = value
    first = next(statements(decl.body), [])
    clears = source_text(first).replace(" ", "").endswith(".clear();")  # params.hosts.clear(); then push_back
    repeatable = bool(decl.params) and decl.params != ["bool"] and not clears and (
        has_call(decl.body, "push_back", "emplace_back", "insert") or _passes_list(decl.body, scope))
    split = "csv" if has_call(decl.body, "parse_csv_row") else None
    if split is None and re.search(r"string_split\s*<[^>]*>\s*\(\s*" + re.escape(param) + r"\s*,\s*','",
                                   source_text(decl.body)):
        split = ","
    exits = has_call(decl.body, "exit") or any(
        source_text(s).replace(" ", "") in ("params.usage=true;", "params.completion=true;")
        for s in statements(decl.body))
    reads_file = has_call(decl.body, "read_file") or any(is_(t, "ifstream") for t in decl.body)
    first_line = shown_text(text.split("\n", 1)[0]).strip()
    long_names = [s for s in decl.spellings if s.startswith("--")]
    return {
        "name": long_names[0] if long_names else decl.spellings[0],
        "spellings": tuple(decl.spellings),
        "nargs": len(decl.params) if decl.params != ["bool"] else 0,
        "negations": tuple(decl.negations),
        "metavars": tuple(hints) if all(h is not None for h in hints) else None,
        "kind": kind,
        "parse": rule.parse,
        "choices": rule.choices,
        "keywords": rule.keywords,
        "refuse_if": rule.refuse_if,
        "default": default,
        "default_text": shown_text(raw_default) if raw_default is not None else None,
        "env": decl.env,
        "help": first_line,
        "server_specific": EXAMPLE in decl.examples,
        "sampling": decl.sampling,
        "speculative": decl.spec,
        "repeatable": repeatable,
        "split": split,
        "exits": exits,
        "removed": removed,
        "reads_file": reads_file,
        "line": decl.line,
    }


def _arg_removed_prefix(sources: Sources) -> str:
    found = find_function(sources.arg_toks, "arg_removed")
    if found is None:
        return ""
    return next((t.text for t in found[1] if t.kind == "str"), "")


def _passes_list(body: Sequence[Tok], scope: dict[str, Any]) -> bool:
    """``helper(value, params.some_vector)``: a helper appending to a list member."""
    for i in range(1, len(body) - 2):
        if is_(body[i], "params") and (is_(body[i - 1], ",") or is_(body[i - 1], "(")):
            j = i
            path = "params"
            while j + 2 < len(body) and is_(body[j + 1], ".") and body[j + 2].kind == "id":
                path += "." + body[j + 2].text
                j += 2
            if j + 1 < len(body) and (is_(body[j + 1], ")") or is_(body[j + 1], ",")) and isinstance(
                    scope.get(path), list):
                return True
    return False


# --------------------------------------------------------------------------------------------- output

_FIELD_DEFAULTS: dict[str, Any] = {
    "nargs": 1, "negations": (), "metavars": (), "parse": None, "choices": None, "keywords": (), "refuse_if": (),
    "default": None, "default_text": None, "env": None, "server_specific": False, "sampling": False,
    "speculative": False, "repeatable": False, "split": None, "exits": False, "removed": None,
    "reads_file": False,
}


def render(records: list[dict], sdist: str | None, commit: str | None) -> str:
    lines = [
        '"""llama-server\'s command-line options, as data: GENERATED by scripts/llama_server_options.py, do not edit.',
        "",
        f"Read from llama.cpp {commit or '(unknown commit)'}"
        + (f", as vendored in llama-cpp-python {sdist}" if sdist else "") + ": ``common/arg.cpp``",
        "(``common_params_parser_init``, the options of LLAMA_EXAMPLE_SERVER and the common ones) and the",
        "defaults of ``common/common.h``. After a llama.cpp upgrade, regenerate it::",
        "",
        "    python3 scripts/llama_server_options.py",
        "",
        "Each :class:`~ggufpack.options.server_option.ServerOption` holds what the sources say; a field",
        "the script could not read is ``None``. :mod:`ggufpack.options.server_args` checks an argv against it.",
        '"""',
        "",
        "# ruff: noqa: E501",
        "from __future__ import annotations",
        "",
        "from .server_option import ServerOption",
        "",
        f"LLAMA_CPP_COMMIT = {commit!r}",
        f"LLAMA_CPP_PYTHON_VERSION = {sdist!r}",
        "",
        "OPTIONS: tuple[ServerOption, ...] = (",
    ]
    for rec in records:
        fields = [f"{key}={_literal(value)}" for key, value in rec.items()
                  if not (key in _FIELD_DEFAULTS and value == _FIELD_DEFAULTS[key] and type(value) is type(
                      _FIELD_DEFAULTS[key]))]
        lines.extend(_wrap("    ServerOption(", fields, "),"))
    lines.append(")")
    return "\n".join(lines) + "\n"


def _literal(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _wrap(head: str, fields: list[str], tail: str, width: int = 120) -> list[str]:
    out, current = [], head
    indent = " " * 8
    for i, f in enumerate(fields):
        piece = f + ("," if i < len(fields) - 1 else "")
        candidate = current + ("" if current.endswith("(") else " ") + piece
        if len(candidate) > width and current.strip() not in ("", head.strip()):
            out.append(current)
            current = indent + piece
        else:
            current = candidate
    out.append(current + tail)
    return out


def generate(source: Path) -> str:
    """The text of ``ggufpack/options/llama_server.py`` for the llama.cpp tree at ``source``."""
    sources = Sources.load(Path(source))
    decls, scope, _paths = collect(sources)
    truthy = _truthy_sets(sources)
    records = [record(sources, d, scope, truthy) for d in decls if not d.preset_only]
    seen: dict[str, int] = {}
    for rec in records:
        for s in rec["spellings"] + rec["negations"]:
            if s in seen:
                raise SourceError(f"spelling {s} declared twice (arg.cpp lines {seen[s]} and {rec['line']})")
            seen[s] = rec["line"]
    sdist, commit = sources.version()
    return render(records, sdist, commit)


def default_source() -> Path:
    sys.path.insert(0, str(REPO))
    from ggufpack.backends.source import default_source as installed

    return installed().path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, help="a llama.cpp tree (default: the installed llama-cpp-python's)")
    ap.add_argument("--output", type=Path, default=OUTPUT)
    ap.add_argument("--check", action="store_true", help="exit 1 when --output differs from what would be written")
    ns = ap.parse_args(argv)
    text = generate(ns.source or default_source())
    if ns.check:
        current = ns.output.read_text() if ns.output.is_file() else ""
        if current != text:
            print(f"{ns.output} is stale: run python3 scripts/llama_server_options.py", file=sys.stderr)
            return 1
        return 0
    ns.output.write_text(text)
    print(f"wrote {ns.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
