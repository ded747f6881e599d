"""CONVERT's options, declared once: the Packerfile instruction, ``ggufpack convert`` and the library's
:func:`ggufpack.convert.convert` read them, with the same checks (:meth:`ConvertOptions.validated`).

The output types are those of llama.cpp's ``convert_hf_to_gguf.py --outtype`` that our converter
writes, plus ``AUTO`` (BF16 for bf16 weights, else F16); the default is **F16** (gguf-packer's
``FP16`` is not a type). ``--class=lora`` converts a PEFT adapter and needs ``--base``, the base
model's Hugging Face directory; ``--base`` means nothing for a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from .declare import Invalid, OptionError, Ref, checked, json_arguments, option
from .values import SIZE_HELP, size_in_bytes

AUTO = "AUTO"
#: llama.cpp's order (``--outtype``), AUTO last
CONVERT_TYPES = ("F32", "F16", "BF16", "Q8_0", "TQ1_0", "TQ2_0", AUTO)
DEFAULT_CONVERT_TYPE = "F16"
CONVERT_CLASSES = ("model", "lora")


def _out_type(name: str) -> str:
    upper = name.upper()
    if upper not in CONVERT_TYPES:
        hint = " (F16 is spelled F16)" if upper == "FP16" else ""
        raise Invalid(f" is not a conversion type{hint}: choose one of {', '.join(CONVERT_TYPES)}")
    return upper


def _read_size(text: str) -> int:
    size = size_in_bytes(text)
    if size is None:
        raise Invalid(f": {SIZE_HELP}")
    return size


def _check_size(value: int) -> int:
    if value <= 0:
        raise Invalid(": give a positive size")
    return value


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert: the output type, what the source holds and, for an adapter, its base model.

    ``base`` is a directory on this machine for the library and the CLI, a path in the context or
    the stage in a CONVERT instruction (the build hands the library the directory it names).
    """

    out_type: str = option(DEFAULT_CONVERT_TYPE, flag="type", cli_flag="outtype", key="type", metavar="TYPE",
                           check=_out_type, llama="--outtype",
                           help="F32, F16 (default), BF16, Q8_0, ... or AUTO (BF16 for bf16 weights, else F16); "
                                "an unknown type lists them all")
    model_class: str = option("model", flag="class", key="class", choices=CONVERT_CLASSES,
                              help="what the source holds (default: model)", llama="--lora (convert_lora_to_gguf.py)")
    base: str | os.PathLike[str] | None = option(None, flag="base", metavar="DIR", llama="--base",
                                                 help="with --class lora: the base model's Hugging Face directory")
    split_max_size: int | None = option(None, flag="split-max-size", metavar="SIZE", read=_read_size,
                                        check=_check_size, llama="--split-max-size",
                                        help="split into shards of at most SIZE (e.g. 2G, 500M)")
    model_name: str | None = option(None, flag="model-name", metavar="NAME", packerfile=False, llama="--model-name",
                                    help="general.name (default: from the model card or the source's name)")

    def validated(self, *, lora_needs_base: bool = True) -> ConvertOptions:
        """These options checked (canonical type name); an :class:`OptionError` names the first bad one.

        ``lora_needs_base=False`` leaves a missing base to the converter, which reads the adapter first
        and can say which model it was trained on.
        """
        canonical = replace(self, **checked(ConvertOptions, self))
        if canonical.model_class == "lora" and canonical.base is None and lora_needs_base:
            raise OptionError(ConvertOptions, "model_class", Ref("model_class", "lora", quote=False), " needs ",
                              Ref("base", placeholder=True), ", the Hugging Face directory of the adapter's base model")
        if canonical.model_class == "model" and canonical.base is not None:
            raise OptionError(ConvertOptions, "base", Ref("base"), " only applies to ",
                              Ref("model_class", "lora", quote=False), " (a base model only applies to LoRA adapters)")
        return canonical

    def arguments(self) -> dict[str, object]:
        """The Packerfile options as a CONVERT command's JSON arguments."""
        return json_arguments(self)
