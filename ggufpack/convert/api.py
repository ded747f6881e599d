"""``convert()``: a Hugging Face checkpoint (or PEFT LoRA adapter) directory → GGUF. The library entry point.

The order matters for safety and memory: everything that can be checked without reading weights
(config, tensor headers, shapes, tokenizer, metadata) is checked before the output file is opened;
then the weights stream through :mod:`ggufpack.convert.writer` one tensor at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gguf

from ggufpack.convert.architectures import Architecture, PlannedTensor, converter_for
from ggufpack.convert.checkpoint import Checkpoint, open_checkpoint
from ggufpack.convert.files import malformed
from ggufpack.convert.lora import plan_lora
from ggufpack.convert.model_card import load_metadata, write_metadata
from ggufpack.convert.vocab import load_vocab
from ggufpack.convert.writer import OUT_TYPES, check_metadata, resolve_out_type, tensor_type, write_gguf
from ggufpack.errors import GGUFPackError, shown
from ggufpack.options.convert import ConvertOptions
from ggufpack.progress import QUIET, Progress


@dataclass(frozen=True)
class ConvertResult:
    """What was written: the file, its architecture, type and size, and anything worth a warning."""

    path: Path  # the file to load (the first shard of a split output)
    paths: tuple[Path, ...]  # every file written
    hf_architecture: str  # e.g. LlamaForCausalLM
    architecture: str  # GGUF general.architecture, e.g. llama
    out_type: str  # F32, F16, BF16, Q8_0 (AUTO resolved)
    file_type: int  # general.file_type (gguf.LlamaFileType)
    tensor_count: int
    parameter_count: int
    size: int  # bytes
    warnings: tuple[str, ...]


#: the types a LoRA adapter may be stored in: ternary types would destroy its values
_LORA_QTYPES = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16,
                gguf.GGMLQuantizationType.Q8_0)

def convert(
    src_dir: Path, dest: Path, *, out_type: str = "F16", model_class: str = "model", base: Path | None = None,
    model_name: str | None = None, split_max_size: int | None = None, progress: Progress = QUIET,
    link_roots: Sequence[Path] = (), shown_as: Mapping[Path, str] | None = None,
) -> ConvertResult:
    """Convert the checkpoint in ``src_dir`` to the GGUF file ``dest`` (replaced atomically).

    The options are those of :class:`ggufpack.options.convert.ConvertOptions`, checked by its ``validated()``
    (an :class:`~ggufpack.options.declare.OptionError` names a bad one).
    ``out_type`` is one of :data:`ggufpack.convert.OUTPUT_TYPES`; AUTO keeps bf16 checkpoints BF16,
    else F16. ``model_name`` sets ``general.name`` (like llama.cpp's ``--model-name``); without it the
    name comes from the model card or, failing that, the source directory's name, which is
    meaningless when the caller staged the files under a scratch name: the build engine should pass
    the source's name. ``split_max_size`` (bytes) splits the output into llama.cpp's
    ``-NNNNN-of-NNNNN.gguf`` shards. ``model_class="lora"`` converts the PEFT adapter in ``src_dir``
    for the base model whose Hugging Face directory is ``base`` (see :mod:`ggufpack.convert.lora`).
    Symbolic links in the source directories must stay inside them, or inside ``link_roots`` (the build
    passes its store, whose files it links into a scratch directory; see :mod:`ggufpack.convert.files`).
    ``shown_as`` maps paths given here to the names the progress line and errors call them: the build
    engine stages a source in a scratch directory, whose path means nothing to the user, and maps it
    (and ``dest``, ``base``) to what the Packerfile names.
    Raises :class:`ggufpack.errors.GGUFPackError` on any input problem; ``dest`` is then left untouched.
    """
    names = dict(shown_as or {})
    with _named_as(names):
        return _convert(Path(src_dir), Path(dest), out_type=out_type, model_class=model_class, base=base,
                        model_name=model_name, split_max_size=split_max_size, progress=progress,
                        link_roots=link_roots, names=names)


def _rename(text: str, names: Mapping[Path, str]) -> str:
    """``text`` with each path of ``names`` (the deepest first) written as ``names`` calls it."""
    for path in sorted(names, key=lambda p: len(str(p)), reverse=True):
        text = text.replace(str(path), names[path])
    return text


@contextmanager
def _named_as(names: Mapping[Path, str]) -> Iterator[None]:
    """An error raised inside names the paths as ``names`` does; its type, cause and traceback stay."""
    try:
        yield
    except GGUFPackError as exc:
        if names:
            exc.args = tuple(_rename(a, names) if isinstance(a, str) else a for a in exc.args)
        raise


def _convert(src_dir: Path, dest: Path, *, out_type: str, model_class: str, base: Path | None,
             model_name: str | None, split_max_size: int | None, progress: Progress, link_roots: Sequence[Path],
             names: Mapping[Path, str]) -> ConvertResult:
    # the checks of ggufpack convert and CONVERT; a LoRA without base is left to plan_lora, which names the
    # base the adapter was trained on
    options = ConvertOptions(out_type=out_type, model_class=model_class, base=base, split_max_size=split_max_size,
                             model_name=model_name).validated(lora_needs_base=False)
    if options.model_class == "lora":
        job = _lora_job(src_dir, base, options.out_type, split_max_size, link_roots)
    else:
        job = _model_job(src_dir, options.out_type, link_roots)
    return _write(job, src_dir, dest, model_name, split_max_size, progress, names)


def resolved_out_type(src_dir: Path, out_type: str, *, model_class: str = "model", base: Path | None = None,
                      link_roots: Sequence[Path] = ()) -> str:
    """What ``out_type`` (AUTO in particular) means for this source, read from tensor headers only.

    For naming an output before converting it, as llama.cpp's converter names its files by type.
    """
    if model_class == "lora":
        tensors = plan_lora(Path(src_dir), base, link_roots).tensors
    else:
        _, tensors = _planned(open_checkpoint(Path(src_dir), link_roots))
    return resolve_out_type(out_type, tensors)


def _planned(ckpt: Checkpoint) -> tuple[Architecture, list[PlannedTensor]]:
    """The checkpoint's converter and GGUF tensors, planned (not loaded); a config of the wrong shape is our error."""
    arch = converter_for(ckpt)
    with malformed(f"{ckpt.directory / 'config.json'}: malformed hyperparameters"):
        return arch, arch.tensors(ckpt)


@dataclass
class _Job:
    """What differs between a model and an adapter: the tensors, their types and the keys around them."""

    hf_architecture: str
    gguf_arch: gguf.MODEL_ARCH
    gguf_type: str  # general.type
    tensors: list[PlannedTensor]
    out_type: str
    types: list[gguf.GGMLQuantizationType]
    write_keys: Callable[[gguf.GGUFWriter], None]
    warnings: list[str]


def _model_job(src_dir: Path, out_type: str, link_roots: Sequence[Path]) -> _Job:
    warnings: list[str] = []
    ckpt = open_checkpoint(src_dir, link_roots)
    arch, tensors = _planned(ckpt)
    resolved = resolve_out_type(out_type, tensors)
    types = [tensor_type(t, resolved, warnings) for t in tensors]
    # multimodal wrappers (Gemma3ForConditionalGeneration) keep the text model's vocab_size in text_config
    text_config = ckpt.config.get("text_config")
    vocab_size = ckpt.config.get("vocab_size", text_config.get("vocab_size") if isinstance(text_config, dict) else None)
    vocab = load_vocab(src_dir, vocab_size, warnings)

    def write_keys(writer: gguf.GGUFWriter) -> None:
        with malformed(f"{src_dir / 'config.json'}: malformed hyperparameters"):
            arch.write_hparams(ckpt, writer, warnings)
        with malformed(f"{src_dir}: malformed tokenizer files"):  # gguf-py writes the special tokens, templates
            vocab.write(writer)

    return _Job(ckpt.architecture, arch.gguf_arch, gguf.GGUFType.MODEL, tensors, resolved, types, write_keys, warnings)


def _lora_job(src_dir: Path, base: Path | None, out_type: str, split_max_size: int | None,
              link_roots: Sequence[Path]) -> _Job:
    warnings: list[str] = []
    plan = plan_lora(src_dir, base, link_roots)
    resolved = resolve_out_type(out_type, plan.tensors)
    if OUT_TYPES[resolved][0] not in _LORA_QTYPES:
        raise GGUFPackError(f"a LoRA adapter cannot be stored as {resolved} (it would lose its values); "
                            f"use F16, BF16, Q8_0 or F32")
    if split_max_size is not None:
        raise GGUFPackError("a LoRA adapter cannot be split: llama.cpp loads an adapter from one file")
    # lora_b rows are rank-long (8, 16...), often shorter than a Q8_0 block: one warning for all of them
    kept: list[str] = []
    types = [tensor_type(t, resolved, kept) for t in plan.tensors]
    if kept:
        warnings.append(f"{len(kept)} LoRA tensor(s) kept F16, first {kept[0]}")
    invocation = plan.config.get("alora_invocation_tokens")
    if invocation is not None and not (isinstance(invocation, list) and all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 1 << 32 for t in invocation)):
        raise GGUFPackError(f"{src_dir / 'adapter_config.json'}: alora_invocation_tokens must be a list of token ids, "
                            f"not {shown(invocation)}")

    def write_keys(writer: gguf.GGUFWriter) -> None:
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, plan.alpha)
        if invocation:  # activated LoRA: llama.cpp enables it after these tokens
            writer.add_key_value(gguf.Keys.Adapter.ALORA_INVOCATION_TOKENS, invocation,
                                 gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT32)

    return _Job(plan.base.architecture, plan.arch.gguf_arch, gguf.GGUFType.ADAPTER, plan.tensors, resolved, types,
                write_keys, warnings)


def _write(job: _Job, src_dir: Path, dest: Path, model_name: str | None, split_max_size: int | None,
           progress: Progress, names: Mapping[Path, str]) -> ConvertResult:
    warnings = job.warnings
    metadata = load_metadata(src_dir, sum(math.prod(t.shape) for t in job.tensors), warnings, model_name)
    arch_name = gguf.MODEL_ARCH_NAMES[job.gguf_arch]
    file_type = OUT_TYPES[job.out_type][1]
    progress.log(f"converting {_rename(str(src_dir), names)} ({job.hf_architecture} {job.gguf_type}) to "
                 f"{job.out_type}: {_rename(str(dest), names)}")
    writer = gguf.GGUFWriter(path=None, arch=arch_name)
    writer.add_type(job.gguf_type)
    write_metadata(writer, metadata)
    job.write_keys(writer)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    check_metadata(writer)
    written = write_gguf(writer, job.tensors, job.types, dest, progress, split_max_size=split_max_size)
    for w in warnings:
        progress.log(f"warning: {w}")
    return ConvertResult(
        path=written.path, paths=written.paths, hf_architecture=job.hf_architecture, architecture=arch_name,
        out_type=job.out_type,
        file_type=int(file_type), tensor_count=written.tensor_count, parameter_count=written.parameter_count,
        size=written.size, warnings=tuple(warnings),
    )
