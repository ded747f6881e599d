"""Generic nodes → one typed command per instruction, with variables expanded and values checked.

Each ``parse_<keyword>`` reads a :class:`Node` through an :class:`Expansion` (the variables in
scope where the instruction stands) and returns a frozen command. The planner decides the scope;
this module decides what each instruction accepts.
"""

from __future__ import annotations

import difflib
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import PackerfileError, SourcePosition, UsageError
from ..options.checksum import parse_checksum as http_checksum
from ..options.quant_names import (
    DEFAULT_QUANTIZE_TYPE,
    FILE_TYPES,
    normalize_quantize_type,
    normalize_tensor_type,
)
from .expand import ExpansionBudget, Scope, expand
from .lexer import Flag, Heredoc, Node, ParsedText, Word, json_raw_offset

INSTRUCTIONS = ("FROM", "ARG", "ADD", "COPY", "CAT", "CONVERT", "QUANTIZE", "IMATRIX", "LABEL", "CMD")
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

CONVERT_TYPES = ("F32", "F16", "BF16", "Q8_0", "TQ1_0", "TQ2_0", "AUTO")
DEFAULT_CONVERT_TYPE = "F16"
CONVERT_CLASSES = ("model", "lora")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHMOD_RE = re.compile(r"^[0-7]{3,4}$")
_CHOWN_RE = re.compile(r"^(\d+|root)(:(\d+|root))?$")
_SIZE_RE = re.compile(r"^(\d+)([KMGT]?)$", re.IGNORECASE)
_POSITIVE_INT_RE = re.compile(r"^[1-9]\d*$")
_OVERRIDE_KV_RE = re.compile(r"^[^=]+=(int|float|bool|str):.*$")


class Expansion:
    """Expands the words of one node in one scope; builds errors that point into the source.

    ``budget`` bounds what variable values add to the whole Packerfile: the planner passes one
    per plan (see :class:`ExpansionBudget`).
    """

    def __init__(self, parsed: ParsedText, node: Node, scope: Scope, budget: ExpansionBudget | None = None) -> None:
        self.parsed = parsed
        self.node = node
        self.scope = scope
        self.budget = budget if budget is not None else ExpansionBudget()

    def error(self, message: str, position: SourcePosition | None = None) -> PackerfileError:
        return self.parsed.error(message, position or self.node.position)

    def _expand(self, text: str, base_offset: int, scope: Scope | None, heredoc: bool = False) -> str:
        node = self.node
        return expand(
            text, scope, escape=self.parsed.escape, heredoc=heredoc,
            locate=lambda off: node.position_at(base_offset + off), source_line=self.parsed.source_line,
            budget=self.budget,
        )

    def json_args(self) -> list[str]:
        """The JSON form's elements, expanded. Each is expanded as heredoc-like text (quotes inside it
        stay literal: JSON already delimits it); errors point into the element through JSON escapes."""
        node = self.node
        assert node.json_args is not None
        quotes = node.json_offsets or []
        rest = node.rest

        def locator(index: int) -> Callable[[int], SourcePosition]:
            if index >= len(quotes):
                return lambda _off: node.position_at(node.rest_offset)
            quote = quotes[index] - node.rest_offset
            return lambda off: node.position_at(node.rest_offset + json_raw_offset(rest, quote, off))

        return [
            expand(value, self.scope, escape=self.parsed.escape, heredoc=True, locate=locator(index),
                   source_line=self.parsed.source_line, budget=self.budget)
            for index, value in enumerate(node.json_args)
        ]

    def word(self, word: Word) -> str:
        return self._expand(word.text, word.offset, self.scope)

    def text(self, text: str, offset: int) -> str:
        return self._expand(text, offset, self.scope)

    def flag(self, flag: Flag) -> str:
        assert flag.value is not None
        return self._expand(flag.value, flag.value_offset, self.scope)

    def heredoc(self, heredoc: Heredoc) -> str:
        """A heredoc body, expanded unless its delimiter was quoted."""
        if not heredoc.expand:
            return heredoc.body
        lines = heredoc.body.split("\n")
        starts = [0]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line) + 1)

        def locate(offset: int) -> SourcePosition:
            index = max(bisect_right(starts, offset) - 1, 0)
            indent = heredoc.indents[index] if index < len(heredoc.indents) else 0
            return SourcePosition(
                self.parsed.file, heredoc.body_line + index, offset - starts[index] + 1 + indent
            )

        return expand(
            heredoc.body, self.scope, escape=self.parsed.escape, heredoc=True, locate=locate,
            source_line=self.parsed.source_line, budget=self.budget,
        )


# ---------------------------------------------------------------------------------------- flags

_STRING, _BOOL, _LIST = "string", "bool", "list"

FLAG_SPECS: dict[str, dict[str, str]] = {
    "FROM": {"platform": _STRING},
    "ARG": {},
    "ADD": {
        "keep-git-dir": _BOOL, "checksum": _STRING, "chown": _STRING, "chmod": _STRING, "link": _BOOL,
        "exclude": _LIST,
    },
    "COPY": {
        "from": _STRING, "chown": _STRING, "chmod": _STRING, "link": _BOOL, "exclude": _LIST,
        "parents": _BOOL,
    },
    "CAT": {"chown": _STRING, "chmod": _STRING},
    "CONVERT": {"from": _STRING, "type": _STRING, "class": _STRING, "base": _STRING, "split-max-size": _STRING},
    "QUANTIZE": {
        "from": _STRING, "type": _STRING, "pure": _BOOL, "imatrix": _STRING, "include-weights": _LIST,
        "exclude-weights": _LIST, "leave-output-tensor": _BOOL, "output-tensor-type": _STRING,
        "token-embedding-type": _STRING, "tensor-type": _LIST, "allow-requantize": _BOOL,
        "keep-split": _BOOL, "override-kv": _LIST,
    },
    "IMATRIX": {"from": _STRING, "chunks": _STRING, "ctx-size": _STRING},
    "LABEL": {},
    "CMD": {},
}


@dataclass
class Flags:
    """The flags of one node, checked against its instruction's spec and expanded."""

    values: dict[str, Any]
    positions: dict[str, SourcePosition]

    def string(self, name: str) -> str | None:
        return self.values.get(name)

    def boolean(self, name: str) -> bool:
        return bool(self.values.get(name, False))

    def strings(self, name: str) -> list[str]:
        return list(self.values.get(name, []))

    def position(self, name: str) -> SourcePosition | None:
        return self.positions.get(name)


def _check_open(ex: Expansion) -> None:
    """Report a quote or ``${`` left open, before arity checks that would miscount the words."""
    node = ex.node
    if node.open_at is None or node.json_args is not None or node.keyword == "CMD":
        return
    kind = {"'": "unterminated single quote", '"': "unterminated double quote"}.get(
        node.open_char, "bad variable substitution: missing '}'"
    )
    raise ex.error(kind, node.position_at(node.open_at))


def _parse_flags(ex: Expansion) -> Flags:
    node = ex.node
    _check_open(ex)
    spec = FLAG_SPECS[node.keyword]
    values: dict[str, Any] = {}
    positions: dict[str, SourcePosition] = {}
    for flag in node.flags:
        kind = spec.get(flag.name)
        if kind is None:
            known = ", ".join(f"--{name}" for name in spec) or "none"
            hint = difflib.get_close_matches(flag.name, list(spec), n=1)
            suggestion = f" (did you mean --{hint[0]}?)" if hint else ""
            raise ex.error(f"unknown flag --{flag.name} for {node.keyword}{suggestion}; known flags: {known}",
                           flag.position)
        if kind != _LIST and flag.name in values:
            raise ex.error(f"flag --{flag.name} is given twice", flag.position)
        positions.setdefault(flag.name, flag.position)
        if kind == _BOOL:
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
        if kind == _LIST:
            values.setdefault(flag.name, []).append(value)
        else:
            values[flag.name] = value
    return Flags(values, positions)


# ------------------------------------------------------------------------------------- commands


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
class FromCommand(Command):
    keyword: ClassVar[str] = "FROM"
    base: str
    name: str | None
    platform: str | None

    def arguments(self) -> dict[str, Any]:
        return {"base": self.base, "name": self.name, "platform": self.platform}


@dataclass(frozen=True)
class ArgCommand(Command):
    keyword: ClassVar[str] = "ARG"
    #: (name, default or None); defaults are expanded where the ARG stands
    args: tuple[tuple[str, str | None], ...]

    def arguments(self) -> dict[str, Any]:
        return {"args": [{"name": name, "default": default} for name, default in self.args]}


@dataclass(frozen=True)
class InlineContent:
    """A file written from text in the Packerfile (a heredoc)."""

    name: str
    data: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "data": self.data}


@dataclass(frozen=True)
class _FileCommand(Command):
    """Shared shape of ADD and COPY: sources, inline heredoc files, destination and file flags."""

    makes_layer: ClassVar[bool] = True
    sources: tuple[str, ...]
    contents: tuple[InlineContent, ...]
    dest: str
    chown: str | None
    chmod: str | None
    link: bool
    excludes: tuple[str, ...]

    def _file_arguments(self) -> dict[str, Any]:
        return {
            "sources": list(self.sources), "contents": [c.to_json() for c in self.contents],
            "dest": self.dest, "chown": self.chown, "chmod": self.chmod, "link": self.link,
            "exclude": list(self.excludes),
        }


@dataclass(frozen=True)
class AddCommand(_FileCommand):
    keyword: ClassVar[str] = "ADD"
    checksum: str | None = None
    keep_git_dir: bool = False

    def arguments(self) -> dict[str, Any]:
        return {**self._file_arguments(), "checksum": self.checksum, "keep_git_dir": self.keep_git_dir}


@dataclass(frozen=True)
class CopyCommand(_FileCommand):
    keyword: ClassVar[str] = "COPY"
    source_from: str | None = None
    parents: bool = False

    def arguments(self) -> dict[str, Any]:
        return {**self._file_arguments(), "from": self.source_from, "parents": self.parents}

    @property
    def from_ref(self) -> str | None:
        return self.source_from


@dataclass(frozen=True)
class CatCommand(Command):
    keyword: ClassVar[str] = "CAT"
    makes_layer: ClassVar[bool] = True
    content: str
    dest: str
    chown: str | None
    chmod: str | None

    def arguments(self) -> dict[str, Any]:
        return {"content": self.content, "dest": self.dest, "chown": self.chown, "chmod": self.chmod}


@dataclass(frozen=True)
class ConvertCommand(Command):
    keyword: ClassVar[str] = "CONVERT"
    makes_layer: ClassVar[bool] = True
    source: str
    dest: str
    source_from: str | None
    type: str
    model_class: str
    base: str | None
    split_max_size: int | None

    def arguments(self) -> dict[str, Any]:
        return {
            "source": self.source, "dest": self.dest, "from": self.source_from, "type": self.type,
            "class": self.model_class, "base": self.base, "split_max_size": self.split_max_size,
        }

    @property
    def from_ref(self) -> str | None:
        return self.source_from


@dataclass(frozen=True)
class QuantizeCommand(Command):
    keyword: ClassVar[str] = "QUANTIZE"
    makes_layer: ClassVar[bool] = True
    source: str
    dest: str
    source_from: str | None
    type: str
    pure: bool = False
    imatrix: str | None = None
    include_weights: tuple[str, ...] = ()
    exclude_weights: tuple[str, ...] = ()
    leave_output_tensor: bool = False
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    tensor_types: tuple[tuple[str, str], ...] = ()
    allow_requantize: bool = False
    keep_split: bool = False
    override_kv: tuple[str, ...] = ()

    def arguments(self) -> dict[str, Any]:
        return {
            "source": self.source, "dest": self.dest, "from": self.source_from, "type": self.type,
            "pure": self.pure, "imatrix": self.imatrix, "include_weights": list(self.include_weights),
            "exclude_weights": list(self.exclude_weights), "leave_output_tensor": self.leave_output_tensor,
            "output_tensor_type": self.output_tensor_type, "token_embedding_type": self.token_embedding_type,
            "tensor_types": [{"pattern": p, "type": t} for p, t in self.tensor_types],
            "allow_requantize": self.allow_requantize, "keep_split": self.keep_split,
            "override_kv": list(self.override_kv),
        }

    @property
    def from_ref(self) -> str | None:
        return self.source_from


@dataclass(frozen=True)
class ImatrixCommand(Command):
    keyword: ClassVar[str] = "IMATRIX"
    makes_layer: ClassVar[bool] = True
    model: str
    calibration: str
    dest: str
    source_from: str | None
    chunks: int | None
    ctx_size: int | None

    def arguments(self) -> dict[str, Any]:
        return {
            "model": self.model, "calibration": self.calibration, "dest": self.dest,
            "from": self.source_from, "chunks": self.chunks, "ctx_size": self.ctx_size,
        }

    @property
    def from_ref(self) -> str | None:
        return self.source_from


@dataclass(frozen=True)
class LabelCommand(Command):
    keyword: ClassVar[str] = "LABEL"
    labels: tuple[tuple[str, str], ...]

    def arguments(self) -> dict[str, Any]:
        return {"labels": dict(self.labels)}


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


# -------------------------------------------------------------------------------------- parsers


def _need_args(ex: Expansion, minimum: int, usage: str) -> None:
    if len(ex.node.words) < minimum:
        raise ex.error(f"{ex.node.keyword} needs {usage}")


def parse_from(ex: Expansion) -> FromCommand:
    node = ex.node
    flags = _parse_flags(ex)
    words = node.words
    usage = "FROM takes 'FROM <scratch|stage|image> [AS <name>]'"
    if not words:
        raise ex.error(f"{usage}: the base is missing")
    if len(words) > 1 and words[1].text.lower() != "as":
        raise ex.error(f"{usage}: expected AS after the base, got {words[1].text!r}", words[1].position)
    if len(words) == 2:
        raise ex.error(f"{usage}: AS needs a stage name", words[1].position)
    if len(words) > 3:
        raise ex.error(f"{usage}: unexpected {words[3].text!r} after the stage name", words[3].position)
    base = ex.word(words[0])
    if not base:
        raise ex.error("FROM has an empty base", words[0].position)
    name = None
    if len(words) == 3:
        name = ex.word(words[2]).lower()
        if not _STAGE_NAME_RE.match(name):
            raise ex.error(
                f"invalid stage name {name!r}: start with a letter, then letters, digits, '-', '_' or '.'",
                words[2].position,
            )
    return FromCommand(node.position, node.original, base, name, flags.string("platform"))


def parse_arg(ex: Expansion, on_declared: Callable[[str, str | None], None]) -> ArgCommand:
    """``on_declared`` is told of each ARG as soon as it is read, so a later default can use it."""
    node = ex.node
    _parse_flags(ex)
    _need_args(ex, 1, "a name: ARG <name>[=<default>]")
    pairs: list[tuple[str, str | None]] = []
    for word in node.words:
        name, eq, _ = word.text.partition("=")
        if not _ARG_NAME_RE.match(name):
            raise ex.error(f"invalid ARG name {name!r}", word.position)
        default = ex.text(word.text[len(name) + 1 :], word.offset + len(name) + 1) if eq else None
        on_declared(name, default)
        pairs.append((name, default))
    return ArgCommand(node.position, node.original, tuple(pairs))


def _sources_and_dest(ex: Expansion, usage: str) -> tuple[list[str], list[InlineContent], str]:
    """Split ADD/COPY arguments into paths, heredoc contents and the destination."""
    node = ex.node
    if node.json_args is not None:
        if len(node.json_args) < 2:
            raise ex.error(f"{node.keyword} needs {usage}")
        values = ex.json_args()
        for index, value in enumerate(values):
            if not value:
                where = "destination" if index == len(values) - 1 else "source path"
                quotes = node.json_offsets or []
                position = node.position_at(quotes[index]) if index < len(quotes) else None
                raise ex.error(f"{node.keyword} has an empty {where}", position)
        return values[:-1], [], values[-1]
    _need_args(ex, 2, usage)
    *source_words, dest_word = node.words
    if dest_word.text.startswith("<<"):
        raise ex.error(f"{node.keyword}: a heredoc cannot be the destination", dest_word.position)
    heredocs = {h.position: h for h in node.heredocs}
    sources: list[str] = []
    contents: list[InlineContent] = []
    for word in source_words:
        heredoc = heredocs.get(word.position)
        if heredoc is not None:
            contents.append(InlineContent(heredoc.name, ex.heredoc(heredoc)))
            continue
        value = ex.word(word)
        if not value:
            raise ex.error(f"{node.keyword} has an empty source path", word.position)
        sources.append(value)
    dest = ex.word(dest_word)
    if not dest:
        raise ex.error(f"{node.keyword} has an empty destination", dest_word.position)
    return sources, contents, dest


def _check_chown_chmod(ex: Expansion, flags: Flags) -> tuple[str | None, str | None]:
    chown, chmod = flags.string("chown"), flags.string("chmod")
    if chown is not None and not _CHOWN_RE.match(chown):
        raise ex.error(
            f"--chown={chown!r}: model images have no user database, use numeric <uid>[:<gid>]",
            flags.position("chown"),
        )
    if chmod is not None and not _CHMOD_RE.match(chmod):
        raise ex.error(f"--chmod={chmod!r}: use octal permissions such as 644 or 0755", flags.position("chmod"))
    return chown, chmod


def parse_checksum(ex: Expansion, value: str, position: SourcePosition | None) -> str:
    """``--checksum`` checked by the same rules the download applies, reported at the flag."""
    try:
        algo, hexdigest = http_checksum(value)
    except UsageError as exc:
        raise ex.error(str(exc), position) from None
    return f"{algo}:{hexdigest}"


def parse_add(ex: Expansion) -> AddCommand:
    node = ex.node
    flags = _parse_flags(ex)
    sources, contents, dest = _sources_and_dest(ex, "at least one source and a destination")
    chown, chmod = _check_chown_chmod(ex, flags)
    checksum = flags.string("checksum")
    if checksum is not None:
        checksum = parse_checksum(ex, checksum, flags.position("checksum"))
        if len(sources) != 1 or contents or not re.match(r"^https?://", sources[0]):
            raise ex.error("--checksum needs exactly one http(s):// source", flags.position("checksum"))
    return AddCommand(
        node.position, node.original, tuple(sources), tuple(contents), dest, chown, chmod,
        flags.boolean("link"), tuple(flags.strings("exclude")), checksum, flags.boolean("keep-git-dir"),
    )


def parse_copy(ex: Expansion) -> CopyCommand:
    node = ex.node
    flags = _parse_flags(ex)
    sources, contents, dest = _sources_and_dest(ex, "at least one source and a destination")
    chown, chmod = _check_chown_chmod(ex, flags)
    source_from = flags.string("from")
    if source_from is not None and contents:
        raise ex.error("COPY --from cannot copy heredoc content", flags.position("from"))
    return CopyCommand(
        node.position, node.original, tuple(sources), tuple(contents), dest, chown, chmod,
        flags.boolean("link"), tuple(flags.strings("exclude")), source_from.lower() if source_from else None,
        flags.boolean("parents"),
    )


def parse_cat(ex: Expansion) -> CatCommand:
    """``CAT <<EOF [<<EOF2 ...] [text ...] <dest>``: heredocs and words are concatenated in order."""
    node = ex.node
    flags = _parse_flags(ex)
    if node.json_args is not None:
        raise ex.error("CAT takes heredocs, not a JSON array: CAT <<EOF <dest>")
    _need_args(ex, 2, "content and a destination: CAT <<EOF <dest>")
    *content_words, dest_word = node.words
    if dest_word.text.startswith("<<"):
        raise ex.error("CAT: a heredoc cannot be the destination", dest_word.position)
    heredocs = {h.position: h for h in node.heredocs}
    parts: list[str] = []
    words: list[str] = []
    for word in content_words:
        heredoc = heredocs.get(word.position)
        if heredoc is None:
            words.append(ex.word(word))
            continue
        if words:
            parts.append(" ".join(words))
            words = []
        parts.append(ex.heredoc(heredoc))
    if words:
        parts.append(" ".join(words))
    dest = ex.word(dest_word)
    if not dest:
        raise ex.error("CAT has an empty destination", dest_word.position)
    chown, chmod = _check_chown_chmod(ex, flags)
    return CatCommand(node.position, node.original, "".join(parts), dest, chown, chmod)


def _source_and_dest(ex: Expansion) -> tuple[str, str]:
    node = ex.node
    values = ex.json_args() if node.json_args is not None else [ex.word(w) for w in node.words]
    if len(values) != 2:
        raise ex.error(f"{node.keyword} takes exactly one source and one destination, got {len(values)} "
                       "argument(s)")
    for value, word in zip(values, node.words, strict=False):
        if not value:
            raise ex.error(f"{node.keyword} has an empty path", word.position)
    return values[0], values[1]


SIZE_HELP = "write a number with an optional K, M, G or T suffix"


def size_in_bytes(value: str) -> int | None:
    """``2G``, ``500M``, ``4096`` → bytes (decimal units, as llama.cpp's ``--split-max-size``); None if invalid."""
    match = _SIZE_RE.match(value)
    if not match or int(match.group(1)) == 0:
        return None
    return int(match.group(1)) * 1000 ** "_KMGT".index(match.group(2).upper() or "_")


def _parse_size(ex: Expansion, value: str, position: SourcePosition | None) -> int:
    size = size_in_bytes(value)
    if size is None:
        raise ex.error(f"invalid size {value!r}: {SIZE_HELP}", position)
    return size


def parse_convert(ex: Expansion) -> ConvertCommand:
    node = ex.node
    flags = _parse_flags(ex)
    source, dest = _source_and_dest(ex)
    raw_type = flags.string("type") or DEFAULT_CONVERT_TYPE
    out_type = raw_type.upper()
    if out_type not in CONVERT_TYPES:
        hint = " (F16 is spelled F16)" if out_type == "FP16" else ""
        raise ex.error(
            f"CONVERT --type={raw_type!r} is not a conversion type{hint}; use one of {', '.join(CONVERT_TYPES)}",
            flags.position("type"),
        )
    model_class = (flags.string("class") or "model").lower()
    if model_class not in CONVERT_CLASSES:
        raise ex.error(f"CONVERT --class={model_class!r}: use model or lora", flags.position("class"))
    base = flags.string("base")
    if model_class == "lora" and base is None:
        raise ex.error("CONVERT --class=lora needs --base=<path of the base model directory>",
                       flags.position("class"))
    if model_class == "model" and base is not None:
        raise ex.error("CONVERT --base only applies to --class=lora", flags.position("base"))
    split = flags.string("split-max-size")
    split_size = _parse_size(ex, split, flags.position("split-max-size")) if split else None
    source_from = flags.string("from")
    return ConvertCommand(
        node.position, node.original, source, dest, source_from.lower() if source_from else None, out_type,
        model_class, base, split_size,
    )


def _tensor_type_flag(ex: Expansion, flags: Flags, name: str) -> str | None:
    value = flags.string(name)
    if value is None:
        return None
    canonical = normalize_tensor_type(value)
    if canonical is None:
        raise ex.error(f"--{name}={value!r} is not a ggml tensor type (e.g. q8_0, q6_k, f16)",
                       flags.position(name))
    return canonical


def parse_quantize(ex: Expansion) -> QuantizeCommand:
    node = ex.node
    flags = _parse_flags(ex)
    source, dest = _source_and_dest(ex)
    raw_type = flags.string("type") or DEFAULT_QUANTIZE_TYPE
    qtype = normalize_quantize_type(raw_type)
    if qtype is None:
        hint = difflib.get_close_matches(raw_type.upper(), list(FILE_TYPES), n=3)
        suggestion = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise ex.error(f"QUANTIZE --type={raw_type!r} is not a llama.cpp quantization type{suggestion}",
                       flags.position("type"))
    if flags.strings("include-weights") and flags.strings("exclude-weights"):
        raise ex.error("QUANTIZE --include-weights and --exclude-weights cannot be used together",
                       flags.position("exclude-weights"))
    tensor_types: list[tuple[str, str]] = []
    for spec in flags.strings("tensor-type"):
        pattern, eq, type_name = spec.rpartition("=")
        canonical = normalize_tensor_type(type_name) if eq and pattern else None
        if canonical is None:
            raise ex.error(f"--tensor-type={spec!r}: write PATTERN=TYPE with a ggml type (e.g. attn_v=q8_0)",
                           flags.position("tensor-type"))
        tensor_types.append((pattern, canonical))
    for spec in flags.strings("override-kv"):
        if not _OVERRIDE_KV_RE.match(spec):
            raise ex.error(f"--override-kv={spec!r}: write KEY=TYPE:VALUE with TYPE int, float, bool or str",
                           flags.position("override-kv"))
    source_from = flags.string("from")
    return QuantizeCommand(
        node.position, node.original, source, dest, source_from.lower() if source_from else None, qtype,
        pure=flags.boolean("pure"), imatrix=flags.string("imatrix"),
        include_weights=tuple(flags.strings("include-weights")),
        exclude_weights=tuple(flags.strings("exclude-weights")),
        leave_output_tensor=flags.boolean("leave-output-tensor"),
        output_tensor_type=_tensor_type_flag(ex, flags, "output-tensor-type"),
        token_embedding_type=_tensor_type_flag(ex, flags, "token-embedding-type"),
        tensor_types=tuple(tensor_types), allow_requantize=flags.boolean("allow-requantize"),
        keep_split=flags.boolean("keep-split"), override_kv=tuple(flags.strings("override-kv")),
    )


def parse_imatrix(ex: Expansion) -> ImatrixCommand:
    node = ex.node
    flags = _parse_flags(ex)
    values = ex.json_args() if node.json_args is not None else [ex.word(w) for w in node.words]
    if len(values) != 3:
        raise ex.error("IMATRIX takes <model.gguf> <calibration.txt> <out.imatrix>")

    def positive(name: str) -> int | None:
        value = flags.string(name)
        if value is None:
            return None
        if not _POSITIVE_INT_RE.match(value):
            raise ex.error(f"--{name}={value!r} must be a positive integer", flags.position(name))
        return int(value)

    source_from = flags.string("from")
    return ImatrixCommand(
        node.position, node.original, values[0], values[1], values[2],
        source_from.lower() if source_from else None, positive("chunks"), positive("ctx-size"),
    )


def _split_label_word(text: str, escape: str) -> int:
    """Offset of the first ``=`` outside quotes in a raw LABEL word, or -1."""
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == escape and quote != "'":
            i += 2
            continue
        if quote is None and ch in "'\"":
            quote = ch
        elif ch == quote:
            quote = None
        elif ch == "=" and quote is None:
            return i
        i += 1
    return -1


def parse_label(ex: Expansion) -> LabelCommand:
    node = ex.node
    _parse_flags(ex)
    _need_args(ex, 1, "at least one key=value pair")
    labels: list[tuple[str, str]] = []
    first = node.words[0]
    if _split_label_word(first.text, ex.parsed.escape) < 0:
        # Legacy form 'LABEL key value with spaces': one label, the rest of the line is its value.
        if len(node.words) < 2:
            raise ex.error("LABEL needs key=value pairs", first.position)
        key = ex.word(first)
        rest_offset = node.words[1].offset
        value = ex.text(node.rest[rest_offset - node.rest_offset :], rest_offset)
        labels.append((key, value))
    else:
        for word in node.words:
            eq = _split_label_word(word.text, ex.parsed.escape)
            if eq < 0:
                raise ex.error(f"LABEL expects key=value, got {word.text!r}", word.position)
            key = ex.text(word.text[:eq], word.offset)
            if not key:
                raise ex.error("LABEL has an empty key", word.position)
            labels.append((key, ex.text(word.text[eq + 1 :], word.offset + eq + 1)))
    return LabelCommand(node.position, node.original, tuple(labels))


#: CMD options that name a model file: option → (role, number of values, index of the path among them)
CMD_FILE_OPTIONS: dict[str, tuple[str, int]] = {
    "-m": ("model", 1), "--model": ("model", 1),
    "-md": ("drafter", 1), "--model-draft": ("drafter", 1),
    "-mm": ("projector", 1), "--mmproj": ("projector", 1),
    "--lora": ("adapter", 1), "--lora-scaled": ("adapter", 2),
    "--control-vector": ("adapter", 1), "--control-vector-scaled": ("adapter", 2),
}


def cmd_roles(args: list[str], error: Callable[[str], PackerfileError]) -> tuple[CmdRole, ...]:
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


def parse_cmd(ex: Expansion) -> CmdCommand:
    node = ex.node
    _parse_flags(ex)
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


def unsupported_instruction(parsed: ParsedText, node: Node) -> PackerfileError:
    keyword = node.keyword
    if keyword in _DOCKER_ONLY:
        return parsed.error(f"{keyword} is not supported in a Packerfile: {_DOCKER_ONLY[keyword]}", node.position)
    hint = difflib.get_close_matches(keyword, INSTRUCTIONS, n=1)
    suggestion = f" (did you mean {hint[0]}?)" if hint else ""
    return parsed.error(f"unknown instruction {keyword}{suggestion}", node.position)
