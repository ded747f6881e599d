"""``ggufpack convert``: a Hugging Face checkpoint or PEFT LoRA adapter → GGUF, outside any build.

Arguments follow llama.cpp's ``convert_hf_to_gguf.py`` (``--outfile``, ``--outtype``,
``--model-name``, ``--split-max-size``); the work is :func:`ggufpack.convert.convert`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_common import add_progress_options, progress_for
from .options.convert import AUTO, ConvertOptions
from .options.declare import add_arguments, from_arguments


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert.api import convert, resolved_out_type
    from .terminal import human_size

    options = from_arguments(ConvertOptions, args).validated()
    src = Path(args.source)
    base = Path(options.base) if options.base is not None else None
    outfile = Path(args.outfile) if args.outfile else None
    if outfile is None:
        # like llama.cpp: named after the source and the type, in the current directory
        named_type = options.out_type if options.out_type != AUTO else resolved_out_type(
            src, options.out_type, model_class=options.model_class, base=base)
        outfile = Path(f"{src.resolve().name}-{named_type}.gguf")
    progress = progress_for(args)
    result = convert(src, outfile, out_type=options.out_type, model_class=options.model_class, base=base,
                     model_name=options.model_name, split_max_size=options.split_max_size, progress=progress)
    for path in result.paths:
        print(path)
    kind = "LoRA adapter" if options.model_class == "lora" else "model"
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
    add_arguments(parser, ConvertOptions)  # the options of the CONVERT instruction, and --model-name
    add_progress_options(parser, "print only the written path")
    parser.set_defaults(func=cmd_convert)
