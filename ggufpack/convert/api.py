"""``convert()``: a Hugging Face checkpoint directory → one GGUF file. The library entry point.

The order matters for safety and memory: everything that can be checked without reading weights
(config, tensor headers, shapes, tokenizer, metadata) is checked before the output file is opened;
then the weights stream through :mod:`ggufpack.convert.writer` one tensor at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gguf

from ggufpack.convert.architectures import architecture_for
from ggufpack.convert.checkpoint import open_checkpoint
from ggufpack.convert.model_card import load_metadata, write_metadata
from ggufpack.convert.vocab import load_vocab
from ggufpack.convert.writer import OUT_TYPES, resolve_out_type, tensor_type, write_gguf
from ggufpack.errors import GGUFPackError
from ggufpack.progress import QUIET, Progress


@dataclass(frozen=True)
class ConvertResult:
    """What was written: the file, its architecture, type and size, and anything worth a warning."""

    path: Path
    hf_architecture: str  # e.g. LlamaForCausalLM
    architecture: str  # GGUF general.architecture, e.g. llama
    out_type: str  # F32, F16, BF16, Q8_0 (AUTO resolved)
    file_type: int  # general.file_type (gguf.LlamaFileType)
    tensor_count: int
    parameter_count: int
    size: int  # bytes
    warnings: tuple[str, ...]


def convert(
    src_dir: Path, dest: Path, *, out_type: str = "F16", model_class: str = "model", base: Path | None = None,
    model_name: str | None = None, split_max_size: int | None = None, progress: Progress = QUIET,
) -> ConvertResult:
    """Convert the checkpoint in ``src_dir`` to the GGUF file ``dest`` (replaced atomically).

    ``out_type`` is F32, F16, BF16, Q8_0 or AUTO (BF16 for bf16 checkpoints, else F16).
    ``model_name`` sets ``general.name`` (like llama.cpp's ``--model-name``); without it the name comes
    from the model card or, failing that, the source directory's name, which is meaningless when
    the caller staged the files under a scratch name: the build engine should pass the source's name.
    ``split_max_size`` (bytes) splits the output into llama.cpp's ``-NNNNN-of-NNNNN.gguf`` shards.
    ``model_class="lora"`` with ``base`` is reserved for PEFT adapters (not implemented yet). Raises
    :class:`ggufpack.errors.GGUFPackError` on any input problem; ``dest`` is then left untouched.
    """
    src_dir, dest = Path(src_dir), Path(dest)
    if model_class != "model":
        raise GGUFPackError(f"CONVERT --class={model_class} is not supported yet (only 'model'; LoRA: issue #4)")
    del base  # used by --class=lora only
    warnings: list[str] = []
    ckpt = open_checkpoint(src_dir)
    arch = architecture_for(ckpt.architecture)
    tensors = arch.tensors(ckpt)
    resolved = resolve_out_type(out_type, tensors)
    types = [tensor_type(t, resolved, warnings) for t in tensors]
    file_type = OUT_TYPES[resolved][1]
    vocab = load_vocab(src_dir, ckpt.config.get("vocab_size"), warnings)
    n_params = sum(math.prod(t.shape) for t in tensors)
    metadata = load_metadata(src_dir, n_params, warnings, model_name)

    arch_name = gguf.MODEL_ARCH_NAMES[arch.gguf_arch]
    progress.log(f"converting {src_dir} ({ckpt.architecture}) to {resolved}: {dest}")
    writer = gguf.GGUFWriter(path=None, arch=arch_name)
    writer.add_type(gguf.GGUFType.MODEL)
    write_metadata(writer, metadata)
    arch.write_hparams(ckpt, writer, warnings)
    writer.add_file_type(file_type)
    vocab.write(writer)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    written = write_gguf(writer, tensors, types, dest, progress, split_max_size=split_max_size)
    for w in warnings:
        progress.log(f"warning: {w}")
    return ConvertResult(
        path=written.path, hf_architecture=ckpt.architecture, architecture=arch_name, out_type=resolved,
        file_type=int(file_type), tensor_count=written.tensor_count, parameter_count=written.parameter_count,
        size=written.size, warnings=tuple(warnings),
    )
