"""``ggufpack convert``: a Hugging Face checkpoint or PEFT LoRA adapter → GGUF, outside any build.

Arguments follow llama.cpp's ``convert_hf_to_gguf.py`` (``--outfile``, ``--outtype``,
``--model-name``, ``--split-max-size``); the work is :func:`ggufpack.convert.convert`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_common import add_progress_options, progress_for
from .errors import UsageError
from .packerfile.instructions import SIZE_HELP, size_in_bytes


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import OUTPUT_TYPES
    from .convert.api import convert, resolved_out_type
    from .terminal import human_size

    out_type = args.outtype.upper()
    if out_type not in OUTPUT_TYPES:
        raise UsageError(f"--outtype {args.outtype!r}: choose one of {', '.join(OUTPUT_TYPES)}")
    if args.model_class == "lora" and args.base is None:
        raise UsageError("--class lora needs --base DIR, the Hugging Face directory of the adapter's base model")
    if args.model_class == "model" and args.base is not None:
        raise UsageError("--base only applies to --class lora")
    split = None
    if args.split_max_size is not None:
        split = size_in_bytes(args.split_max_size)
        if split is None:
            raise UsageError(f"--split-max-size {args.split_max_size!r}: {SIZE_HELP}")
    src = Path(args.source)
    base = Path(args.base) if args.base is not None else None
    outfile = Path(args.outfile) if args.outfile else None
    if outfile is None:
        # like llama.cpp: named after the source and the type, in the current directory
        named_type = out_type if out_type != "AUTO" else resolved_out_type(
            src, out_type, model_class=args.model_class, base=base)
        outfile = Path(f"{src.resolve().name}-{named_type}.gguf")
    progress = progress_for(args)
    result = convert(src, outfile, out_type=out_type, model_class=args.model_class, base=base,
                     model_name=args.model_name, split_max_size=split, progress=progress)
    for path in result.paths:
        print(path)
    kind = "LoRA adapter" if args.model_class == "lora" else "model"
    progress.log(f"{result.architecture} {kind} ({result.hf_architecture}), {result.out_type}, "
                 f"{result.tensor_count} tensors, {human_size(result.size)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``convert`` to the ``ggufpack`` parser."""
    parser = sub.add_parser(
        "convert", help="convert a Hugging Face checkpoint or PEFT LoRA adapter directory to GGUF",
        description="Convert a Hugging Face safetensors checkpoint (--class model) or a PEFT LoRA adapter "
                    "(--class lora, with --base) to GGUF. Prints the path written.",
    )
    parser.add_argument("source", metavar="SRC", help="the model or adapter directory")
    parser.add_argument("--outfile", metavar="OUT", help="output file (default: ./<SRC name>-<type>.gguf)")
    parser.add_argument("--outtype", default="F16", metavar="TYPE",
                        help="F32, F16 (default), BF16, Q8_0, ... or AUTO (BF16 for bf16 weights, else F16); "
                             "an unknown type lists them all")
    parser.add_argument("--class", dest="model_class", choices=["model", "lora"], default="model",
                        help="what SRC holds (default: model)")
    parser.add_argument("--base", metavar="DIR", help="with --class lora: the base model's Hugging Face directory")
    parser.add_argument("--model-name", help="general.name (default: from the model card or SRC's name)")
    parser.add_argument("--split-max-size", metavar="SIZE", help="split into shards of at most SIZE (e.g. 2G, 500M)")
    add_progress_options(parser, "print only the written path")
    parser.set_defaults(func=cmd_convert)
