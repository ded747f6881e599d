"""``ggufpack estimate``: how much RAM and VRAM llama.cpp will allocate for a model image or GGUF file.

Only the options the user types override the image CMD (argparse defaults are ``None`` for that);
the work is :mod:`ggufpack.estimate`.
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli_common import add_registry_options, client_for, store_for

# argparse dest → :class:`ggufpack.estimate.params.Options` field, for options that take a value
_VALUE_OPTIONS = ("ctx_size", "batch_size", "ubatch_size", "parallel", "cache_type_k", "cache_type_v",
                  "flash_attn", "gpu_layers", "gpu_layers_draft", "tensor_split", "main_gpu")
_SWITCH_OPTIONS = {"no_mmap": ("mmap", False), "no_kv_offload": ("kv_offload", False),
                   "kv_unified": ("kv_unified", True), "swa_full": ("swa_full", True),
                   "embedding": ("embedding", True)}


def _given(args: argparse.Namespace) -> dict[str, Any]:
    from .estimate.params import parse_value

    given: dict[str, Any] = {}
    for name in _VALUE_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            given[name] = parse_value(name, value)
    for name, (field, flag) in _SWITCH_OPTIONS.items():
        if getattr(args, name):
            given[field] = flag
    return given


def cmd_estimate(args: argparse.Namespace) -> int:
    from .estimate import estimate, resolve
    from .estimate.inputs import load
    from .estimate.render import as_json, table
    from .oci.platform import DEFAULT_PLATFORM

    inputs = load(args.target, lambda: store_for(args), lambda registry: client_for(args, registry), DEFAULT_PLATFORM)
    options = resolve(inputs.cmd, _given(args))
    rows = estimate(inputs, options, args.gpu_layers_step)
    print(as_json(inputs.source, rows) if args.json else table(rows))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``estimate`` to the ``ggufpack`` parser."""
    p = sub.add_parser(
        "estimate", help="estimate the RAM and VRAM llama.cpp needs for an image or GGUF file",
        description="Estimate what llama.cpp (llama-server) allocates for a model: weights, KV cache, compute "
                    "and output buffers, per device. Reads GGUF headers only (from a file, a stored image's "
                    "config or a registry's). Settings default to llama-server's, then the image CMD's; "
                    "an option given here overrides both.",
    )
    p.add_argument("target", metavar="REF|FILE.gguf", help="image reference or ID, or a GGUF file (any shard)")
    p.add_argument("-c", "--ctx-size", help="context size (0 = the model's training context)")
    p.add_argument("-b", "--batch-size", help="logical batch size (default 2048)")
    p.add_argument("-ub", "--ubatch-size", help="physical batch size (default 512)")
    p.add_argument("-np", "--parallel", help="slots (default: auto = 4 slots sharing a unified KV cache)")
    p.add_argument("-ctk", "--cache-type-k", help="K cache type: f16 (default), q8_0, q4_0, ...")
    p.add_argument("-ctv", "--cache-type-v", help="V cache type (quantized types need flash attention)")
    p.add_argument("-fa", "--flash-attn", metavar="on|off|auto", help="flash attention (default auto = on)")
    p.add_argument("--no-mmap", action="store_true", help="load the weights into allocated memory, not mapped")
    p.add_argument("-ngl", "--gpu-layers", help="layers to offload, counting the output layer (default: all)")
    p.add_argument("-ngld", "--gpu-layers-draft", help="drafter layers to offload (default: all)")
    p.add_argument("--gpu-layers-step", type=int, metavar="N", help="one row per N offloaded layers, 0 to all")
    p.add_argument("-ts", "--tensor-split", metavar="a,b,..", help="split the offloaded layers over GPUs")
    p.add_argument("-mg", "--main-gpu", help="main GPU index")
    p.add_argument("-nkvo", "--no-kv-offload", action="store_true", help="keep the KV cache in RAM")
    p.add_argument("-kvu", "--kv-unified", action="store_true", help="one KV cache shared by all slots")
    p.add_argument("--swa-full", action="store_true", help="full-size cache for sliding-window layers")
    p.add_argument("--embedding", action="store_true", help="embedding mode (output buffer holds embeddings)")
    p.add_argument("--json", action="store_true", help="every component in bytes, one object per row")
    add_registry_options(p)
    p.set_defaults(func=cmd_estimate)
