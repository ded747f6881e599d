"""The settings of an estimate: llama-server's defaults, overridden by the image CMD, overridden by the user,
then the rules of the runtime that serves it.

The order matters and is the point of this module: a flag the user did not give never overrides what the
image's CMD says (gguf-packer's estimator lets its own defaults win over ``-c``/``-b``/``-ub``...).
Defaults are llama-server's in the llama.cpp release ggufpack vendors (``common/common.h``,
``common/arg.cpp``, ``tools/server/server.cpp``; the option names and defaults are read from
:mod:`ggufpack.options.llama_server`): context 0 (= the model's training context), batch 2048,
micro-batch 512, 4 slots with a unified KV cache when ``-np`` is not given, f16 cache, flash attention
``auto`` (resolved to on: the CPU and CUDA backends implement it), ``-ngl`` auto (every layer that
fits; estimated as all of them), mmap on, KV offload on.

Then :func:`resolve` applies what the runtime does with them (``runtime``):

- both: an embedding model's batch is cut to its micro-batch (llama-server's rule, which ggufpack's
  launcher of llama-cpp-python follows too);
- ``llama-server``: the compute graph is reserved for one output per slot (``n_outputs_max``, times
  the draft length with a drafter), or for every token of the batch for embeddings;
- ``llama-cpp-python`` (ggufpack's default runtime, :mod:`ggufpack.options.default_runtime`): a
  generating model gets one slot and one output per step; an embedding model llama-server's slots;
- ``gpus``: the GPUs the runtime can use on the machine; with none, every layer stays on the host.
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
    pooling: str = ""
    draft_max: int = 3
    """Tokens a drafter proposes per step (``--spec-draft-n-max``)."""
    outputs_max: int = 0
    """Outputs one micro-batch holds (llama.cpp's ``n_outputs_max``; 0 = the whole batch): the logits the
    compute graph is reserved for."""
    gpus: int = 1
    """GPUs the layers can go to (0: none, every layer on the host); ``--tensor-split`` names more."""

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
                                 ("auto", ("auto", "-1"))):
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


def _slots(v: str) -> int:
    n = _int(v)
    return 0 if n == -1 else n  # llama-server's -1: auto


def _mmap(v: str) -> bool:
    return v.lower() in ("auto", "mmap", "mmap+mlock")


# llama-server options (their names in :mod:`ggufpack.options.llama_server`, any spelling in a CMD) →
# (Options field, parser of the value)
_VALUE_OPTIONS: dict[str, tuple[str, Any]] = {
    "--ctx-size": ("ctx_size", _int),
    "--batch-size": ("batch_size", _int),
    "--ubatch-size": ("ubatch_size", _int),
    "--parallel": ("parallel", _slots),
    "--cache-type-k": ("cache_type_k", str.lower),
    "--cache-type-v": ("cache_type_v", str.lower),
    "--flash-attn": ("flash_attn", _flash),
    "--gpu-layers": ("gpu_layers", _layers),
    "--spec-draft-ngl": ("gpu_layers_draft", _layers),
    "--tensor-split": ("tensor_split", _split),
    "--main-gpu": ("main_gpu", _int),
    "--load-mode": ("mmap", _mmap),
    "--pooling": ("pooling", str.lower),
    "--spec-draft-n-max": ("draft_max", _int),
}
#: flags: (Options field, its value when given; negated spellings give the opposite)
_SWITCHES: dict[str, tuple[str, bool]] = {
    "--kv-offload": ("kv_offload", True),
    "--kv-unified": ("kv_unified", True),
    "--swa-full": ("swa_full", True),
    "--embedding": ("embedding", True),
}
#: spellings older llama.cpp releases (and gguf-packer's images) use, gone from llama-server since
_LEGACY_SWITCHES: dict[str, tuple[str, bool]] = {"--no-mmap": ("mmap", False), "--mmap": ("mmap", True)}
_LEGACY_VALUES = {"-ngld": "--spec-draft-ngl", "--gpu-layers-draft": "--spec-draft-ngl",
                  "--n-gpu-layers-draft": "--spec-draft-ngl"}


def parse_value(field_name: str, text: str) -> Any:
    """A command-line value for the :class:`Options` field ``field_name``, parsed as in a CMD."""
    parse = next(parse for name, parse in _VALUE_OPTIONS.values() if name == field_name)
    return parse(text)


def _canonical(arg: str) -> tuple[str, bool] | None:
    """(llama-server's name of option ``arg``, False for a negated spelling), or None if unknown."""
    from ggufpack.options.server_args import find_option

    if arg in _LEGACY_VALUES:
        return _LEGACY_VALUES[arg], True
    option = find_option(arg)
    if option is None:
        return None
    return option.name, arg.replace("_", "-") not in option.negations


def _no_value_follows(cmd: Sequence[str], i: int) -> bool:
    """``-fa`` at ``i`` stands alone (older llama.cpp: a flag)."""
    return i + 1 == len(cmd) or (cmd[i + 1].startswith("-") and cmd[i + 1] != "-1")


def options_from_cmd(cmd: Sequence[str]) -> dict[str, Any]:
    """The settings an image's CMD (llama-server arguments) gives, by :class:`Options` field.

    Other arguments are skipped; ``--flag=value``, ``-fa`` without a value and ``--no-mmap`` (older
    llama.cpp) work.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(cmd):
        arg = cmd[i]
        name, eq, inline = arg.partition("=")
        found = _canonical(name)
        if name in _LEGACY_SWITCHES and not eq:
            field_name, flag = _LEGACY_SWITCHES[name]
            out[field_name] = flag
        elif found is not None and found[0] in _VALUE_OPTIONS:
            field_name, parse = _VALUE_OPTIONS[found[0]]
            if eq:
                value = inline
            elif found[0] == "--flash-attn" and _no_value_follows(cmd, i):
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
        elif found is not None and found[0] in _SWITCHES:
            field_name, flag = _SWITCHES[found[0]]
            out[field_name] = flag if found[1] else not flag
        i += 1
    return out


def _for_runtime(options: Options, runtime: str, drafter: bool) -> Options:
    """What ``runtime`` makes of the settings (see the module's docstring)."""
    from ggufpack.options.default_runtime import AUTO_SLOTS, SLOTS, batch_sizes

    batch, _ = batch_sizes(options.batch_size, options.ubatch_size, options.embedding)
    options = replace(options, batch_size=batch)
    pooled = options.embedding or options.pooling not in ("", "none")
    if runtime == "llama-cpp-python":
        if options.embedding:
            return replace(options, parallel=options.parallel or AUTO_SLOTS, kv_unified=True, outputs_max=0)
        if options.parallel > SLOTS:
            raise UsageError(f"-np {options.parallel}: llama-cpp-python's server answers one request at a time; "
                             "estimate --runtime llama-server")
        return replace(options, parallel=SLOTS, outputs_max=SLOTS)
    if runtime != "llama-server":
        raise UsageError(f"runtime {runtime!r}: choose llama-server or llama-cpp-python")
    per_seq = 1 + (max(options.draft_max, 0) if drafter else 0)
    return replace(options, outputs_max=0 if pooled else min(batch, options.n_seq * per_seq))


def resolve(cmd: Sequence[str], given: Mapping[str, Any], *, runtime: str | None = None, gpus: int | None = None,
            drafter: bool = False) -> Options:
    """llama-server's defaults, then the CMD's settings, then what the user gave (``given``: only the
    options the user really typed, by :class:`Options` field), then what ``runtime`` makes of them
    (None: the settings as given, the way llama.cpp's C API takes them) on a machine with ``gpus``
    GPUs (None: one, or as many as ``--tensor-split`` names); checked."""
    options = replace(Options(), **options_from_cmd(cmd))
    options = replace(options, **dict(given))
    if gpus is not None:
        if gpus < 0:
            raise UsageError("the number of GPUs must not be negative")
        options = replace(options, gpus=gpus)
        if gpus == 0:  # llama.cpp keeps every layer on the host whatever -ngl says
            options = replace(options, gpu_layers=0, gpu_layers_draft=0, tensor_split=())
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
    return options if runtime is None else _for_runtime(options, runtime, drafter)
