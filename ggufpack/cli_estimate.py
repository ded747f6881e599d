"""``ggufpack estimate``: how much RAM and VRAM llama.cpp will allocate for a model image or GGUF file.

Only the options the user types override the image CMD (argparse defaults are ``None`` for that);
the work is :mod:`ggufpack.estimate`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .cli_common import add_registry_options, store_for

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
    from .api import estimate
    from .estimate.render import as_json, table

    result = estimate(args.target, gpu_layers_step=args.gpu_layers_step, store=store_for(args),
                      plain_http=args.plain_http, insecure=args.insecure, runtime=args.runtime,
                      backend=args.backend, gpus=args.gpus, **_given(args))
    print(as_json(result.source, result.rows, result.runtime) if args.format == "json" else table(result.rows))
    if args.format != "json" and not args.quiet:
        gpus = len(result.rows[0].devices.gpus) if result.rows else 0
        print(f"(for {result.runtime}, {f'{gpus} GPU(s)' if gpus else 'no GPU: every layer in RAM'}; "
              f"--runtime llama-server for llama-server's figures)" if result.runtime != "llama-server" else
              f"(for llama-server, {f'{gpus} GPU(s)' if gpus else 'no GPU: every layer in RAM'})", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``estimate`` to the ``ggufpack`` parser."""
    p = sub.add_parser(
        "estimate", help="estimate the RAM and VRAM llama.cpp needs for an image or GGUF file",
        description="Estimate what llama.cpp allocates to serve a model: weights, KV cache, compute and output "
                    "buffers, per device. Reads GGUF headers only (from a file, a stored image's config or a "
                    "registry's). By default the figures are those of `ggufpack run` on this machine: the runtime "
                    "it picks (llama-cpp-python's server, unless the CMD needs llama-server), with that runtime's "
                    "settings (llama-cpp-python: one slot for a generating model; both: the model's training "
                    "context, batch 2048 / 512, flash attention auto, a sliding-window cache of the window's size), "
                    "on the GPUs it can use here (none for a CPU build: every layer in RAM, no VRAM columns). "
                    "--runtime llama-server gives what llama-server allocates (4 slots sharing one cache unless "
                    "-np). Settings default to llama-server's, then the image CMD's; an option given here "
                    "overrides both.",
    )
    p.add_argument("target", metavar="REF|FILE.gguf", help="image reference or ID, or a GGUF file (any shard)")
    p.add_argument("-c", "--ctx-size", help="context size (0 = the model's training context)")
    p.add_argument("-b", "--batch-size", help="logical batch size (default 2048)")
    p.add_argument("-ub", "--ubatch-size", help="physical batch size (default 512)")
    p.add_argument("-np", "--parallel", help="slots (llama-server's default: auto = 4 slots sharing a unified KV "
                                              "cache; llama-cpp-python serves one)")
    p.add_argument("-ctk", "--cache-type-k", help="K cache type: f16 (default), q8_0, q4_0, ...")
    p.add_argument("-ctv", "--cache-type-v", help="V cache type (quantized types need flash attention)")
    p.add_argument("-fa", "--flash-attn", metavar="on|off|auto", help="flash attention (default auto = on)")
    p.add_argument("--no-mmap", action="store_true", help="load the weights into allocated memory, not mapped")
    p.add_argument("-ngl", "--gpu-layers", help="layers to offload, counting the output layer (default: all, when "
                                                "there is a GPU)")
    p.add_argument("-ngld", "--gpu-layers-draft", help="drafter layers to offload (default: all)")
    p.add_argument("--gpu-layers-step", type=int, metavar="N", help="one row per N offloaded layers, 0 to all")
    p.add_argument("-ts", "--tensor-split", metavar="a,b,..", help="split the offloaded layers over GPUs")
    p.add_argument("-mg", "--main-gpu", help="main GPU index")
    p.add_argument("-nkvo", "--no-kv-offload", action="store_true", help="keep the KV cache in RAM")
    p.add_argument("-kvu", "--kv-unified", action="store_true", help="one KV cache shared by all slots")
    p.add_argument("--swa-full", action="store_true", help="full-size cache for sliding-window layers")
    p.add_argument("--embedding", action="store_true", help="embedding mode (output buffer holds embeddings)")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="table (default), or json: every component in bytes, one object per row")
    p.add_argument("--json", dest="format", action="store_const", const="json", help="the same as --format json")
    p.add_argument("--runtime", choices=["auto", "llama-cpp-python", "llama-server"], default="auto",
                   help="whose allocations: auto (default) = the runtime `ggufpack run` would pick here")
    p.add_argument("--backend", metavar="NAME", help="the llama.cpp build llama-server runs from (its devices count)")
    p.add_argument("--gpus", type=int, metavar="N", help="GPUs to estimate for (default: those the runtime can use "
                                                         "here; 0 = none)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line saying whose figures these are")
    add_registry_options(p)
    p.set_defaults(func=cmd_estimate)
