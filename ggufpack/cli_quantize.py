"""`ggufpack quantize` and `ggufpack imatrix`: llama.cpp's quantizer and importance matrices, any backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_common import add_progress_options, progress_for
from .errors import UsageError


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize.types import DEFAULT_QUANTIZE_TYPE

    if args.list_types:
        print(render_type_table())
        return 0
    if args.input is None or args.output is None:
        raise UsageError("ggufpack quantize: give IN.gguf and OUT.gguf (or --list-types)")
    from .quantize.api import quantize_model
    from .quantize.options import QuantizeOptions, parse_tensor_type

    options = QuantizeOptions(
        type=args.type or DEFAULT_QUANTIZE_TYPE, pure=args.pure, allow_requantize=args.allow_requantize,
        leave_output_tensor=args.leave_output_tensor, output_tensor_type=args.output_tensor_type,
        token_embedding_type=args.token_embedding_type, keep_split=args.keep_split,
        imatrix=Path(args.imatrix) if args.imatrix else None, include_weights=tuple(args.include_weights),
        exclude_weights=tuple(args.exclude_weights),
        tensor_types=tuple(parse_tensor_type(spec) for spec in args.tensor_type),
        override_kv=tuple(args.override_kv), threads=args.threads,
    )
    progress = progress_for(args)
    written = quantize_model(Path(args.input), Path(args.output), options, backend=args.backend, progress=progress)
    for path in written:
        print(path)
    return 0


def cmd_imatrix(args: argparse.Namespace) -> int:
    from .quantize.api import make_imatrix
    from .quantize.imatrix import DEFAULT_CTX_SIZE, ImatrixOptions

    for name in ("chunks", "ctx_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} {value}: give a positive number")
    options = ImatrixOptions(chunks=args.chunks, ctx_size=args.ctx_size or DEFAULT_CTX_SIZE, threads=args.threads)
    make_imatrix(Path(args.model), Path(args.calibration), Path(args.output), options, backend=args.backend,
                 progress=progress_for(args))
    print(args.output)
    return 0


def render_type_table() -> str:
    """The quantization types of the installed llama.cpp, as ``llama-quantize --help`` lists them."""
    from .quantize.types import DEFAULT_QUANTIZE_TYPE, aliases, type_table

    rows = [f"{'TYPE':<10} {'FTYPE':>5}  {'MAIN TENSOR TYPE':<16} NOTE"]
    for row in type_table().values():
        notes = []
        if row.name == DEFAULT_QUANTIZE_TYPE:
            notes.append("default")
        if row.needs_imatrix:
            notes.append("needs --imatrix")
        if row.ftype is None:
            notes.append("copy every tensor as it is")
        ftype = "" if row.ftype is None else str(row.ftype)
        rows.append(f"{row.name:<10} {ftype:>5}  {row.default_tensor_type or '-':<16} {', '.join(notes)}".rstrip())
    rows.append("aliases: " + ", ".join(f"{alias}={target}" for alias, target in aliases().items()))
    return "\n".join(rows)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``ggufpack`` parser."""
    q = sub.add_parser("quantize", help="quantize a GGUF file with llama.cpp (every llama-quantize option)")
    q.add_argument("input", nargs="?", metavar="IN.gguf")
    q.add_argument("output", nargs="?", metavar="OUT.gguf")
    q.add_argument("type", nargs="?", metavar="TYPE", help="quantization type (default Q5_K_M; see --list-types)")
    q.add_argument("--list-types", action="store_true", help="print the quantization types and exit")
    q.add_argument("--pure", action="store_true", help="no K-quant mixtures: every tensor gets TYPE")
    q.add_argument("--imatrix", metavar="FILE", help="importance matrix (GGUF or legacy .dat)")
    q.add_argument("--include-weights", action="append", default=[], metavar="NAME",
                   help="use the importance matrix only for tensors whose name contains NAME (repeatable)")
    q.add_argument("--exclude-weights", action="append", default=[], metavar="NAME",
                   help="do not use the importance matrix for tensors whose name contains NAME (repeatable)")
    q.add_argument("--leave-output-tensor", action="store_true", help="leave output.weight unquantized")
    q.add_argument("--output-tensor-type", metavar="GGML_TYPE", help="type of output.weight")
    q.add_argument("--token-embedding-type", metavar="GGML_TYPE", help="type of the token embeddings")
    q.add_argument("--tensor-type", action="append", default=[], metavar="PATTERN=GGML_TYPE",
                   help="give tensors whose name matches the regular expression PATTERN that type (repeatable)")
    q.add_argument("--override-kv", action="append", default=[], metavar="KEY=TYPE:VALUE",
                   help="set a metadata key in the output; TYPE int, float, bool or str (repeatable)")
    q.add_argument("--allow-requantize", action="store_true", help="allow quantizing already quantized tensors")
    q.add_argument("--keep-split", action="store_true", help="keep the input's shards (OUT-0000i-of-0000n.gguf)")
    q.add_argument("--backend", metavar="NAME", help="llama.cpp backend (default: llama-cpp-python in-process)")
    q.add_argument("--threads", type=_count, default=0, metavar="N", help="threads (default: all cores)")
    add_progress_options(q, "print only the files written")
    q.set_defaults(func=cmd_quantize)

    m = sub.add_parser("imatrix", help="compute an importance matrix of a GGUF model over a calibration text")
    m.add_argument("model", metavar="MODEL.gguf")
    m.add_argument("calibration", metavar="CALIBRATION.txt")
    m.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the imatrix (GGUF format)")
    m.add_argument("--chunks", type=_count, metavar="N", help="at most N chunks of the text (default: all)")
    m.add_argument("--ctx-size", type=_count, metavar="N", help="tokens per chunk (default 512)")
    m.add_argument("--backend", metavar="NAME", help="llama.cpp backend (default: llama-cpp-python in-process)")
    m.add_argument("--threads", type=_count, default=0, metavar="N", help="threads (default: all cores)")
    add_progress_options(m, "print only the output path")
    m.set_defaults(func=cmd_imatrix)
