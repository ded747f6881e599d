"""QUANTIZE's options, declared once: the Packerfile instruction, ``ggufpack quantize``, the library's
:func:`ggufpack.quantize.api.quantize_model`, both llama.cpp backends and the numpy fallback read them.

Syntax follows ``llama-quantize``: ``--tensor-type PATTERN=TYPE`` (PATTERN a regular expression searched
in tensor names, lower-cased as the tool does; the first matching pattern wins), ``--override-kv
KEY=TYPE:VALUE`` with TYPE ``int``, ``float``, ``bool`` (``true``/``false``) or ``str`` (at most 127
bytes), keys shorter than 128 bytes. Where the tool is lax (``atol("x")`` is 0) we refuse.
:meth:`QuantizeOptions.validated` is the one check of all of them, pure (no file is looked at): a
Packerfile gets it at plan time, the library before any work.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, replace
from typing import Any

from .declare import BOOL, LIST, POSITIONAL, Invalid, OptionError, Ref, checked, json_arguments, option, options_of
from .quant_names import DEFAULT_QUANTIZE_TYPE, FILE_TYPES, normalize_quantize_type, normalize_tensor_type

#: llama_model_kv_override: char key[128], char val_str[128]
MAX_KEY_BYTES = 127
MAX_STR_BYTES = 127
KV_TYPES = ("int", "float", "bool", "str")

_TENSOR_TYPE_HINT = ": write PATTERN=TYPE with a ggml type (e.g. attn_v=q8_0)"
_KV_HINT = ": write KEY=TYPE:VALUE with TYPE int, float, bool or str (e.g. general.name=str:tiny)"


@dataclass(frozen=True)
class KvOverride:
    """One parsed ``--override-kv``."""

    key: str
    kind: str  # one of KV_TYPES
    value: int | float | bool | str


def _quantize_type(name: str) -> str:
    canonical = normalize_quantize_type(name)
    if canonical is None:
        hint = difflib.get_close_matches(name.strip().upper(), list(FILE_TYPES), n=3)
        suggestion = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise Invalid(f" is not a llama.cpp quantization type{suggestion}; ggufpack quantize --list-types lists them")
    return canonical


def _tensor_type(name: str) -> str:
    canonical = normalize_tensor_type(name)
    if canonical is None:
        raise Invalid(" is not a ggml tensor type (e.g. q8_0, q6_k, f16)")
    return canonical


def _read_tensor_type(spec: str) -> tuple[str, str]:
    pattern, eq, type_name = spec.rpartition("=")
    if not eq or not pattern:
        raise Invalid(_TENSOR_TYPE_HINT)
    return pattern, type_name


def _check_tensor_type(item: tuple[str, str]) -> tuple[str, str]:
    pattern, type_name = item
    canonical = normalize_tensor_type(type_name) if pattern else None
    if canonical is None:
        raise Invalid(_TENSOR_TYPE_HINT)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise Invalid(f": {pattern!r} is not a regular expression ({exc})") from None
    return pattern, canonical


def _kv(spec: str) -> KvOverride:
    key, eq, rest = spec.partition("=")
    kind, colon, text = rest.partition(":")
    if not key or not eq or not colon or kind not in KV_TYPES:
        raise Invalid(_KV_HINT)
    if len(key.encode()) > MAX_KEY_BYTES:
        raise Invalid(f": the key is longer than {MAX_KEY_BYTES} bytes")
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
                raise Invalid(f": a str value is at most {MAX_STR_BYTES} bytes")
            value = text
    except Invalid:
        raise
    except ValueError:
        expected = {"int": "an integer", "float": "a number", "bool": "true or false"}[kind]
        raise Invalid(f": {kind} needs {expected}, not {text!r}") from None
    return KvOverride(key, kind, value)


def _check_kv(spec: str) -> str:
    _kv(spec)
    return spec


def _read_count(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise Invalid(": give a whole number >= 0 (0: all cores)")
    return int(text)


def _check_threads(value: int) -> int:
    if value < 0:
        raise Invalid(": give a whole number >= 0 (0: all cores)")
    return value


def _tensor_type_json(item: tuple[str, str]) -> dict[str, str]:
    return {"pattern": item[0], "type": item[1]}


@dataclass(frozen=True)
class QuantizeOptions:
    """What to quantize to and how; the same object drives the in-process call, the tool's arguments and
    the numpy quantizer. ``imatrix`` is a path on this machine for the library and the CLI, a path in the
    image in a QUANTIZE instruction (the build hands the library the file it names)."""

    type: str = option(DEFAULT_QUANTIZE_TYPE, flag="type", cli_flag=POSITIONAL, metavar="TYPE",
                       help=f"quantization type (default {DEFAULT_QUANTIZE_TYPE}); ggufpack quantize --list-types "
                            "lists them",
                       check=_quantize_type, llama="ftype")
    pure: bool = option(False, flag="pure", kind=BOOL, help="no K-quant mixtures: every tensor gets TYPE",
                        llama="pure")
    imatrix: str | os.PathLike[str] | None = option(
        None, flag="imatrix", metavar="FILE", help="importance matrix (GGUF or legacy .dat)", llama="imatrix",
        numpy=False)
    include_weights: tuple[str, ...] = option(
        (), flag="include-weights", kind=LIST, metavar="NAME", numpy=False, llama="--include-weights",
        help="use the importance matrix only for tensors whose name contains NAME (repeatable)")
    exclude_weights: tuple[str, ...] = option(
        (), flag="exclude-weights", kind=LIST, metavar="NAME", numpy=False, llama="--exclude-weights",
        help="do not use the importance matrix for tensors whose name contains NAME (repeatable)")
    leave_output_tensor: bool = option(False, flag="leave-output-tensor", kind=BOOL,
                                       help="leave output.weight unquantized", llama="quantize_output_tensor=false")
    output_tensor_type: str | None = option(None, flag="output-tensor-type", metavar="GGML_TYPE",
                                            help="type of output.weight", check=_tensor_type,
                                            llama="output_tensor_type")
    token_embedding_type: str | None = option(None, flag="token-embedding-type", metavar="GGML_TYPE",
                                              help="type of the token embeddings", check=_tensor_type,
                                              llama="token_embedding_type")
    tensor_types: tuple[tuple[str, str], ...] = option(
        (), flag="tensor-type", kind=LIST, metavar="PATTERN=GGML_TYPE", read=_read_tensor_type,
        check=_check_tensor_type, write=lambda item: f"{item[0]}={item[1]}", to_json=_tensor_type_json,
        help="give tensors whose name matches the regular expression PATTERN that type (repeatable)",
        llama="tt_overrides", numpy=False)
    allow_requantize: bool = option(False, flag="allow-requantize", kind=BOOL, numpy=False,
                                    help="allow quantizing already quantized tensors", llama="allow_requantize")
    keep_split: bool = option(False, flag="keep-split", kind=BOOL, numpy=False, llama="keep_split",
                              help="keep the input's shards (OUT-0000i-of-0000n.gguf)")
    override_kv: tuple[str, ...] = option(
        (), flag="override-kv", kind=LIST, metavar="KEY=TYPE:VALUE", check=_check_kv, numpy=False,
        help="set a metadata key in the output; TYPE int, float, bool or str (repeatable)", llama="kv_overrides")
    threads: int = option(0, flag="threads", packerfile=False, metavar="N", read=_read_count, check=_check_threads,
                          help="threads (default: all cores)", llama="nthread")
    #: how the imatrix is named in the output's ``quantize.imatrix.file`` (default: the path as given)
    imatrix_name: str | None = None

    def recorded_imatrix_name(self) -> str:
        return self.imatrix_name if self.imatrix_name is not None else str(self.imatrix)

    def validated(self) -> QuantizeOptions:
        """These options checked, with canonical type names; an :class:`OptionError` names the first bad one."""
        canonical = replace(self, **checked(QuantizeOptions, self))
        if canonical.include_weights and canonical.exclude_weights:
            raise OptionError(QuantizeOptions, "exclude_weights", Ref("include_weights"), " and ",
                              Ref("exclude_weights"), " cannot be used together")
        if (canonical.include_weights or canonical.exclude_weights) and canonical.imatrix is None:
            raise OptionError(QuantizeOptions, "include_weights" if canonical.include_weights else "exclude_weights",
                              Ref("include_weights"), "/", Ref("exclude_weights"),
                              " choose importance matrix entries: give ", Ref("imatrix"), " too")
        return canonical

    def arguments(self) -> dict[str, Any]:
        """The Packerfile options as a QUANTIZE command's JSON arguments."""
        return json_arguments(self)

    def unsupported_by_numpy(self) -> list[str]:
        """The CLI flags set here that the numpy quantizer does not honour."""
        return [f"--{o.flag}" for o in options_of(QuantizeOptions)
                if not o.numpy and getattr(self, o.name) != o.default]


def parse_override_kv(spec: str) -> KvOverride:
    """``KEY=TYPE:VALUE`` → :class:`KvOverride`; an :class:`OptionError` says what is wrong."""
    try:
        return _kv(spec)
    except Invalid as exc:
        raise OptionError(QuantizeOptions, "override_kv", Ref("override_kv", spec), str(exc)) from None


def parse_tensor_type(spec: str) -> tuple[str, str]:
    """``PATTERN=TYPE`` → (pattern, canonical ggml type); the pattern must be a valid regular expression."""
    try:
        return _check_tensor_type(_read_tensor_type(spec))
    except Invalid as exc:
        raise OptionError(QuantizeOptions, "tensor_types", Ref("tensor_types", spec), str(exc)) from None
