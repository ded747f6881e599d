"""The settings of an estimate: llama-server's defaults, overridden by the image CMD, overridden by the user.

The order matters and is the point of this module: a flag the user did not give never overrides what the
image's CMD says (gguf-packer's estimator lets its own defaults win over ``-c``/``-b``/``-ub``...).
Defaults are llama-server's in the llama.cpp release ggufpack vendors (``common/common.h``,
``common/arg.cpp``, ``tools/server/server.cpp``): context 0 (= the model's training context), batch
2048, micro-batch 512, 4 slots with a unified KV cache when ``-np`` is not given, f16 cache, flash
attention ``auto`` (resolved to on: the CPU and CUDA backends implement it), ``-ngl`` auto (every layer
that fits; estimated as all of them), mmap on, KV offload on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from ggufpack.errors import UsageError

ALL_LAYERS = -1
"""``gpu_layers`` value meaning every layer (llama.cpp's ``-ngl all``/``auto``, or any negative number)."""

MAX_DEVICES = 16
"""llama.cpp's ``llama_max_devices()``: ``--tensor-split`` must list fewer proportions than that."""

CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
"""Cache types llama-server accepts for ``-ctk``/``-ctv``."""


@dataclass(frozen=True)
class Options:
    ctx_size: int = 0
    batch_size: int = 2048
    ubatch_size: int = 512
    parallel: int = 0
    """Slots (``-np``); 0 is llama-server's auto: 4 slots sharing one unified KV cache."""
    kv_unified: bool = False
    swa_full: bool = False
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    mmap: bool = True
    gpu_layers: int = ALL_LAYERS
    gpu_layers_draft: int = ALL_LAYERS
    tensor_split: tuple[float, ...] = ()
    main_gpu: int = 0
    kv_offload: bool = True
    embedding: bool = False

    @property
    def flash_attn_on(self) -> bool:
        return self.flash_attn != "off"

    @property
    def n_seq(self) -> int:
        return self.parallel or 4

    @property
    def unified(self) -> bool:
        return self.kv_unified or not self.parallel


def cache_type(name: str, flag: str) -> GGMLQuantizationType:
    """The ggml type of a ``-ctk``/``-ctv`` value."""
    if name.lower() not in CACHE_TYPES:
        raise UsageError(f"{flag} {name!r}: choose one of {', '.join(CACHE_TYPES)}")
    return GGMLQuantizationType[name.upper()]


def row_bytes(ggml_type: GGMLQuantizationType, n: int) -> int:
    """Bytes of a row of ``n`` values of ``ggml_type`` (ggml's ``ggml_row_size``)."""
    block, size = GGML_QUANT_SIZES[ggml_type]
    return n // block * size


def _flash(v: str) -> str:
    value = v.lower()
    for canonical, spellings in (("on", ("on", "1", "true", "enabled")), ("off", ("off", "0", "false", "disabled")),
                                 ("auto", ("auto",))):
        if value in spellings:
            return canonical
    raise UsageError(f"flash attention {v!r}: write on, off or auto")


def _layers(v: str) -> int:
    if v in ("auto", "all"):
        return ALL_LAYERS
    n = _int(v)
    return ALL_LAYERS if n < 0 else n


def _int(v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise UsageError(f"{v!r} is not a whole number") from None


def _split(v: str) -> tuple[float, ...]:
    try:
        parts = tuple(float(x) for x in v.replace("/", ",").split(","))
    except ValueError:
        raise UsageError(f"tensor split {v!r}: write proportions such as 3,1") from None
    if not parts or any(not (0 <= p < math.inf) for p in parts) or not sum(parts) > 0:
        raise UsageError(f"tensor split {v!r}: proportions must be finite, >= 0 and not all 0")
    if len(parts) >= MAX_DEVICES:
        raise UsageError(f"tensor split {v!r}: llama.cpp takes at most {MAX_DEVICES - 1} proportions")
    return parts


# llama-server flag spellings → (Options field, parser of the value; None for flags without a value)
_VALUE_FLAGS: dict[str, tuple[str, Any]] = {
    **dict.fromkeys(("-c", "--ctx-size"), ("ctx_size", _int)),
    **dict.fromkeys(("-b", "--batch-size"), ("batch_size", _int)),
    **dict.fromkeys(("-ub", "--ubatch-size"), ("ubatch_size", _int)),
    **dict.fromkeys(("-np", "--parallel"), ("parallel", _int)),
    **dict.fromkeys(("-ctk", "--cache-type-k"), ("cache_type_k", str.lower)),
    **dict.fromkeys(("-ctv", "--cache-type-v"), ("cache_type_v", str.lower)),
    **dict.fromkeys(("-fa", "--flash-attn"), ("flash_attn", _flash)),
    **dict.fromkeys(("-ngl", "--gpu-layers", "--n-gpu-layers"), ("gpu_layers", _layers)),
    **dict.fromkeys(("-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft"), ("gpu_layers_draft", _layers)),
    **dict.fromkeys(("-ts", "--tensor-split"), ("tensor_split", _split)),
    **dict.fromkeys(("-mg", "--main-gpu"), ("main_gpu", _int)),
}
_SWITCHES: dict[str, tuple[str, bool]] = {
    "--no-mmap": ("mmap", False),
    "--mmap": ("mmap", True),
    "-nkvo": ("kv_offload", False),
    "--no-kv-offload": ("kv_offload", False),
    "-kvu": ("kv_unified", True),
    "--kv-unified": ("kv_unified", True),
    "--swa-full": ("swa_full", True),
    "--embedding": ("embedding", True),
    "--embeddings": ("embedding", True),
}


def parse_value(field_name: str, text: str) -> Any:
    """A command-line value for the :class:`Options` field ``field_name``, parsed as in a CMD."""
    parse = next(parse for name, parse in _VALUE_FLAGS.values() if name == field_name)
    return parse(text)


def options_from_cmd(cmd: Sequence[str]) -> dict[str, Any]:
    """The settings an image's CMD (llama-server arguments) gives, by :class:`Options` field.

    Other arguments are skipped; ``--flag=value`` and ``-fa`` without a value (older llama.cpp) work.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(cmd):
        arg = cmd[i]
        name, eq, inline = arg.partition("=")
        if name in _VALUE_FLAGS:
            field_name, parse = _VALUE_FLAGS[name]
            if eq:
                value = inline
            elif name in ("-fa", "--flash-attn") and (i + 1 == len(cmd) or cmd[i + 1].startswith("-")):
                value = "on"
            elif i + 1 < len(cmd):
                i += 1
                value = cmd[i]
            else:
                raise UsageError(f"the image CMD ends with {name} and no value")
            try:
                out[field_name] = parse(value)
            except UsageError as e:
                raise UsageError(f"the image CMD's {name}: {e}") from None
        elif arg in _SWITCHES:
            field_name, flag = _SWITCHES[arg]
            out[field_name] = flag
        i += 1
    return out


def resolve(cmd: Sequence[str], given: Mapping[str, Any]) -> Options:
    """llama-server's defaults, then the CMD's settings, then what the user gave (``given``: only the
    options the user really typed, by :class:`Options` field); checked."""
    options = replace(Options(), **options_from_cmd(cmd))
    options = replace(options, **dict(given))
    for name in ("ctx_size", "batch_size", "ubatch_size", "parallel", "main_gpu"):
        if getattr(options, name) < 0:
            raise UsageError(f"{name.replace('_', '-')} must not be negative")
    if options.batch_size < 1 or options.ubatch_size < 1:
        raise UsageError("batch and micro-batch sizes must be at least 1")
    if max(options.ctx_size, options.batch_size, options.ubatch_size) > 1 << 30 or options.parallel > 256:
        raise UsageError("context, batch sizes above 2^30 tokens or more than 256 slots are not supported")
    cache_type(options.cache_type_k, "--cache-type-k")
    if GGML_QUANT_SIZES[cache_type(options.cache_type_v, "--cache-type-v")][0] > 1 and not options.flash_attn_on:
        raise UsageError("a quantized V cache needs flash attention (llama.cpp refuses it with --flash-attn off)")
    if options.tensor_split and not 0 <= options.main_gpu < len(options.tensor_split):
        raise UsageError(f"--main-gpu {options.main_gpu}: only {len(options.tensor_split)} device(s) in --tensor-split")
    return options
