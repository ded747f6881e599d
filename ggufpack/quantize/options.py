"""The knobs of ``llama-quantize``, checked once, for every backend (in-process or a tool).

Syntax follows the tool: ``--tensor-type PATTERN=TYPE`` (PATTERN a regular expression searched in
tensor names, lower-cased as the tool does; the first matching pattern wins), ``--override-kv
KEY=TYPE:VALUE`` with TYPE ``int``, ``float``, ``bool`` (``true``/``false``) or ``str`` (at most
127 bytes), keys shorter than 128 bytes. Where the tool is lax (``atol("x")`` is 0) we refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .types import DEFAULT_QUANTIZE_TYPE, normalize_quantize_type, normalize_tensor_type

#: llama_model_kv_override: char key[128], char val_str[128]
MAX_KEY_BYTES = 127
MAX_STR_BYTES = 127
KV_TYPES = ("int", "float", "bool", "str")


@dataclass(frozen=True)
class KvOverride:
    """One parsed ``--override-kv``."""

    key: str
    kind: str  # one of KV_TYPES
    value: int | float | bool | str


@dataclass(frozen=True)
class QuantizeOptions:
    """What to quantize to and how; the same object drives the in-process call and the tool's arguments."""

    type: str = DEFAULT_QUANTIZE_TYPE
    pure: bool = False
    allow_requantize: bool = False
    leave_output_tensor: bool = False
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    keep_split: bool = False
    imatrix: Path | None = None
    #: how the imatrix is named in the output's ``quantize.imatrix.file`` (default: the path as given)
    imatrix_name: str | None = None
    include_weights: tuple[str, ...] = ()
    exclude_weights: tuple[str, ...] = ()
    tensor_types: tuple[tuple[str, str], ...] = ()
    override_kv: tuple[str, ...] = field(default=())
    threads: int = 0

    def recorded_imatrix_name(self) -> str:
        return self.imatrix_name if self.imatrix_name is not None else str(self.imatrix)


def parse_override_kv(spec: str) -> KvOverride:
    """``KEY=TYPE:VALUE`` → :class:`KvOverride`; a :class:`UsageError` says what is wrong."""
    key, eq, rest = spec.partition("=")
    kind, colon, text = rest.partition(":")
    hint = "write KEY=TYPE:VALUE with TYPE int, float, bool or str (e.g. general.name=str:tiny)"
    if not key or not eq or not colon or kind not in KV_TYPES:
        raise UsageError(f"--override-kv {spec!r}: {hint}")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise UsageError(f"--override-kv {spec!r}: the key is longer than {MAX_KEY_BYTES} bytes")
    value: int | float | bool | str
    try:
        if kind == "int":
            value = int(text)
        elif kind == "float":
            value = float(text)
        elif kind == "bool":
            if text not in ("true", "false"):
                raise ValueError
            value = text == "true"
        else:
            if len(text.encode()) > MAX_STR_BYTES:
                raise UsageError(f"--override-kv {spec!r}: a str value is at most {MAX_STR_BYTES} bytes")
            value = text
    except ValueError:
        expected = {"int": "an integer", "float": "a number", "bool": "true or false"}[kind]
        raise UsageError(f"--override-kv {spec!r}: {kind} needs {expected}, not {text!r}") from None
    return KvOverride(key, kind, value)


def parse_tensor_type(spec: str) -> tuple[str, str]:
    """``PATTERN=TYPE`` → (pattern, canonical ggml type); the pattern must be a valid regular expression."""
    pattern, eq, type_name = spec.rpartition("=")
    canonical = normalize_tensor_type(type_name) if eq and pattern else None
    if canonical is None:
        raise UsageError(f"--tensor-type {spec!r}: write PATTERN=TYPE with a ggml type (e.g. attn_v=q8_0)")
    _check_pattern(pattern, spec)
    return pattern, canonical


def _check_pattern(pattern: str, spec: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--tensor-type {spec!r}: {pattern!r} is not a regular expression ({exc})") from None


def check_options(options: QuantizeOptions) -> str:
    """Validate every knob; returns the canonical quantization type name."""
    qtype = normalize_quantize_type(options.type)
    if qtype is None:
        raise UsageError(f"{options.type!r} is not a llama.cpp quantization type (ggufpack quantize --list-types)")
    if options.include_weights and options.exclude_weights:
        raise UsageError("--include-weights and --exclude-weights cannot be used together")
    if (options.include_weights or options.exclude_weights) and options.imatrix is None:
        raise UsageError("--include-weights/--exclude-weights choose importance matrix entries: give --imatrix too")
    for what, value in (("--output-tensor-type", options.output_tensor_type),
                        ("--token-embedding-type", options.token_embedding_type)):
        if value is not None and normalize_tensor_type(value) is None:
            raise UsageError(f"{what} {value!r} is not a ggml tensor type (e.g. q8_0, q6_k, f16)")
    for pattern, type_name in options.tensor_types:
        spec = f"{pattern}={type_name}"
        if not pattern or normalize_tensor_type(type_name) is None:
            raise UsageError(f"--tensor-type {spec!r}: write PATTERN=TYPE with a ggml type (e.g. attn_v=q8_0)")
        _check_pattern(pattern, spec)
    for spec in options.override_kv:
        parse_override_kv(spec)
    if options.threads < 0:
        raise UsageError(f"--threads {options.threads}: give a positive number (0: all cores)")
    if options.imatrix is not None and not Path(options.imatrix).is_file():
        raise UsageError(f"--imatrix {options.imatrix}: no such file")
    return qtype
