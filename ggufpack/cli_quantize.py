"""`ggufpack quantize` and `ggufpack imatrix`: llama.cpp's quantizer and importance matrices, any backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_common import add_progress_options, progress_for
from .errors import UsageError
from .options.declare import add_arguments, from_arguments
from .options.quantize import QuantizeOptions


def cmd_quantize(args: argparse.Namespace) -> int:
    if args.list_types:
        print(render_type_table())
        return 0
    if args.input is None or args.output is None:
        raise UsageError("ggufpack quantize: give IN.gguf and OUT.gguf (or --list-types)")
    from .quantize.api import quantize_model

    options = from_arguments(QuantizeOptions, args)
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
    add_arguments(q, QuantizeOptions)  # TYPE, then every option of the QUANTIZE instruction, and --threads
    q.add_argument("--list-types", action="store_true", help="print the quantization types and exit")
    q.add_argument("--backend", metavar="NAME", help="llama.cpp backend (default: llama-cpp-python in-process)")
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
