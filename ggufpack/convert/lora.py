"""PEFT LoRA adapters → the tensors of a GGUF LoRA adapter that llama.cpp applies to our base GGUF.

What llama.cpp's ``llama_adapter_lora`` loader and graph expect (``src/llama-adapter.cpp``,
``src/llama-graph.cpp``):

- keys ``general.type = adapter``, ``general.architecture`` = the base model's, ``adapter.type =
  lora``, ``adapter.lora.alpha`` (written by :mod:`ggufpack.convert.api`);
- for each adapted weight, named as in the base GGUF, ``<name>.lora_a`` and ``<name>.lora_b``. For a
  weight of numpy shape ``(out, in)``: ``lora_a`` is ``(rank, in)`` and ``lora_b`` ``(out, rank)``, i.e.
  PEFT's own ``lora_A``/``lora_B`` once the base architecture's transform has been applied to the
  product. ``token_embd`` is looked up by rows, so there ``lora_a`` is ``(vocab, rank)`` and ``lora_b``
  ``(hidden, rank)``;
- it adds ``scale · b(a x)`` with ``scale = alpha / rank`` (rank = ``lora_b``'s columns).

PEFT scales by ``lora_alpha / r`` (``lora_alpha / √r`` with ``use_rslora``), per module when
``rank_pattern``/``alpha_pattern`` are used. We write one alpha that gives the common modules PEFT's
scale and fold the ratio into ``lora_b`` for any module that differs, so every module gets exactly
PEFT's scale.

The architecture module is reused, not re-implemented: its tensor table names the targets, its
planned base tensors validate them, and its ``transform`` runs on a :class:`LowRank` pair, so a
Llama q/k permute reaches ``lora_b`` exactly as it reaches the base weight.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from re import _parser as re_parser  # type: ignore[attr-defined]
from typing import Any

import gguf
import numpy as np

from ggufpack.convert.architectures import converter_for
from ggufpack.convert.architectures.base import PlannedTensor
from ggufpack.convert.architectures.decoder import DecoderArchitecture
from ggufpack.convert.checkpoint import Checkpoint, open_checkpoint
from ggufpack.convert.files import check_directory, malformed, read_json
from ggufpack.convert.lowrank import LowRank, UnsupportedLowRank
from ggufpack.convert.safetensors import TensorRef, read_header
from ggufpack.errors import GGUFPackError, clipped, shown

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."  # PEFT's prefix before the base model's own module path
_FACTORS = {".lora_A.weight": "a", ".lora_B.weight": "b", ".lora_embedding_A": "a", ".lora_embedding_B": "b"}
_TOKEN_EMBD = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_EMBD] + ".weight"
_OUTPUT = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT] + ".weight"
_MERGE_HINT = "merge it into the base model (PEFT's merge_and_unload) and convert the merged model instead"
#: most rank_pattern/alpha_pattern entries read (each is matched against every adapted module)
MAX_PATTERNS = 4096
#: longest such pattern
MAX_PATTERN_CHARS = 1024
_REPEATS = (re_parser.MAX_REPEAT, re_parser.MIN_REPEAT, re_parser.POSSESSIVE_REPEAT)


@dataclass(frozen=True)
class LoraTarget:
    """One adapted module: its path in the base model and its two factors as PEFT stores them."""

    module: str  # e.g. model.layers.0.self_attn.q_proj
    a: TensorRef  # lora_A (rank, in); lora_embedding_A (rank, vocab)
    b: TensorRef  # lora_B (out, rank); lora_embedding_B (hidden, rank)
    transposed: bool  # the base weight stores b @ a transposed: embeddings, fan_in_fan_out (Conv1D)
    rank: int  # what adapter_config.json says (r or rank_pattern)

    @property
    def weight(self) -> str:
        return self.module + ".weight"

    @property
    def hf_shape(self) -> tuple[int, ...]:
        """The delta's shape in the base weight's Hugging Face layout."""
        shape = (self.b.shape[0], self.a.shape[-1])
        return shape[::-1] if self.transposed else shape


@dataclass(frozen=True)
class LoraPlan:
    """The adapter's GGUF tensors (not loaded), the alpha to write and the base it was checked against."""

    tensors: list[PlannedTensor]
    alpha: float
    base: Checkpoint
    arch: DecoderArchitecture
    config: dict[str, Any]


def plan_lora(adapter_dir: Path, base_dir: Path | None, link_roots: Sequence[Path] = ()) -> LoraPlan:
    """Read and check the adapter in ``adapter_dir`` against the base model in ``base_dir``.

    ``link_roots``: directories beyond the two that their symbolic links may point into.
    """
    config, tensors = _open_adapter(adapter_dir, link_roots)
    if base_dir is None:
        trained_on = config.get("base_model_name_or_path")
        raise GGUFPackError(
            "a LoRA adapter needs its base model: pass the base model's Hugging Face directory with --base"
            + (f" (this adapter was trained on {shown(trained_on)})" if trained_on else "")
        )
    base = open_checkpoint(Path(base_dir), link_roots)
    arch = converter_for(base)
    _check_base_class(config, base)
    if not isinstance(arch, DecoderArchitecture):
        raise GGUFPackError(f"LoRA adapters for {base.architecture} models are not supported (decoder models only)")
    with malformed(f"{base.directory / 'config.json'}: malformed hyperparameters"):
        base_tensors = {t.name: (i, t) for i, t in enumerate(arch.tensors(base))}  # also validates the base
    targets = _targets(config, tensors, base, adapter_dir)
    # the alpha that gives modules at the default r and lora_alpha PEFT's scale: alpha / r == lora_alpha / √r
    alpha = float(config["lora_alpha"]) * (math.sqrt(config["r"]) if config.get("use_rslora") else 1.0)
    name_map = gguf.get_tensor_name_map(arch.gguf_arch, arch.block_count(base.config))
    planned: list[tuple[int, PlannedTensor]] = []
    for target in targets:
        name = _gguf_target(target, arch, base, base_tensors, name_map)
        order, base_tensor = base_tensors[name]
        fold = _peft_scale(config, _pattern(config, "alpha_pattern", target.module, config["lora_alpha"]),
                           target.rank) / _llama_scale(alpha, target.rank)
        transform = partial(_transformed, target, arch, base.config, fold)
        pair = _dry_run(transform, target, arch)
        if pair.shape != base_tensor.shape:
            raise GGUFPackError(f"{clipped(target.module)}: the adapted weight comes out as {pair.shape} but the base "
                                f"model's {name} is {base_tensor.shape}")
        embedding = name == _TOKEN_EMBD
        for suffix, index in ((".lora_a", 0), (".lora_b", 1)):
            shape = _llama_factors(pair, embedding)[index].shape
            load = partial(_load_factor, transform, embedding, index)
            planned.append((order, PlannedTensor(name + suffix, shape, load, target.a.dtype)))
    planned.sort(key=lambda item: item[0])
    return LoraPlan([t for _, t in planned], alpha, base, arch, config)


# --- the adapter directory -----------------------------------------------------------------------


def _open_adapter(directory: Path, link_roots: Sequence[Path]) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    directory = Path(directory)
    if not directory.is_dir():
        raise GGUFPackError(f"{directory}: not a directory (a LoRA adapter is a PEFT output directory)")
    check_directory(directory, link_roots)
    config_path = directory / ADAPTER_CONFIG
    if not config_path.is_file():
        hint = (": it looks like a full model, convert it with --class=model" if (directory / "config.json").is_file()
                else "")
        raise GGUFPackError(f"{directory}: no {ADAPTER_CONFIG}: not a PEFT adapter directory{hint}")
    config = read_json(config_path)
    _check_config(config, config_path)
    weights = directory / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
        if pickles:
            raise GGUFPackError(
                f"{directory}: the adapter is pickled ({', '.join(pickles)}); pickles can execute code when loaded, "
                f"so ggufpack does not read them. Re-save it with save_pretrained(..., safe_serialization=True) "
                f"to get {ADAPTER_WEIGHTS}."
            )
        raise GGUFPackError(f"{directory}: no {ADAPTER_WEIGHTS}")
    return config, read_header(weights)


def _check_config(config: dict[str, Any], path: Path) -> None:
    """Refuse the PEFT features that llama.cpp's LoRA (``W x + scale · B A x``) cannot express."""
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise GGUFPackError(f"{path}: a {clipped(peft_type)} adapter; only LoRA adapters convert to GGUF")
    refusals = [
        (config.get("use_dora"), "DoRA (use_dora) rescales weight columns, which llama.cpp's LoRA cannot do"),
        (config.get("bias", "none") != "none" or config.get("lora_bias"),
         f"the adapter trains biases (bias={shown(config.get('bias'))}, lora_bias={shown(config.get('lora_bias'))}); "
         "llama.cpp's LoRA applies only the low-rank product"),
        (config.get("layer_replication"), "layer_replication changes the number of layers"),
        (config.get("target_parameters"), "LoRA on raw parameters (target_parameters) is not supported"),
    ]
    for refused, why in refusals:
        if refused:
            raise GGUFPackError(f"{path}: {why}; {_MERGE_HINT}")
    _check_value(path, "r", config.get("r"), _is_rank, "a positive integer")
    _check_value(path, "lora_alpha", config.get("lora_alpha"), _is_number, "a number")
    for key, valid, what in (("rank_pattern", _is_rank, "a positive integer"),
                             ("alpha_pattern", _is_number, "a number")):
        patterns = config.get(key) or {}
        if not isinstance(patterns, dict):
            raise GGUFPackError(f"{path}: {shown(key)} must be an object")
        if len(patterns) > MAX_PATTERNS:
            raise GGUFPackError(f"{path}: {key} has {len(patterns)} patterns, more than the {MAX_PATTERNS} read")
        for pattern, value in patterns.items():
            _check_pattern(path, key, pattern)
            _check_value(path, f"{key}[{shown(pattern)}]", value, valid, what)


def _check_pattern(path: Path, key: str, pattern: str) -> None:
    """A PEFT module pattern that compiles and matches in linear time: it is matched against every adapted
    module's name, and a pattern that backtracks (``(a+)+$``) would hang the conversion on a long name."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise GGUFPackError(f"{path}: {key} key {shown(pattern)} is longer than {MAX_PATTERN_CHARS} characters")
    try:
        parsed = re_parser.parse(pattern)
    except re.error as e:
        raise GGUFPackError(f"{path}: {key} key {shown(pattern)} is not a regular expression ({e})") from e
    if _backtracks(list(parsed), inside_repeat=False):
        raise GGUFPackError(f"{path}: {key} key {shown(pattern)} repeats a repetition or alternatives, which can "
                            "take exponential time to match: write it without nested repetition")


def _backtracks(items: list[tuple[Any, Any]], *, inside_repeat: bool) -> bool:
    """Whether a parsed pattern repeats a repetition or an alternation (the shapes that backtrack exponentially)."""
    for op, av in items:
        if op in _REPEATS:
            _, most, sub = av
            if most > 1 and inside_repeat:
                return True
            if _backtracks(list(sub), inside_repeat=inside_repeat or most > 1):
                return True
        elif op == re_parser.BRANCH:
            if inside_repeat or any(_backtracks(list(alt), inside_repeat=False) for alt in av[1]):
                return True
        elif op == re_parser.SUBPATTERN:
            if _backtracks(list(av[-1]), inside_repeat=inside_repeat):
                return True
        elif op in (re_parser.ASSERT, re_parser.ASSERT_NOT) and _backtracks(list(av[1]), inside_repeat=inside_repeat):
            return True
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_rank(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_value(path: Path, key: str, value: Any, valid: Callable[[Any], bool], what: str) -> None:
    if not valid(value):
        raise GGUFPackError(f"{path}: {key} must be {what}, got {shown(value)}")


def _check_base_class(config: dict[str, Any], base: Checkpoint) -> None:
    """The adapter's recorded base class (PEFT's ``auto_mapping``), when there, must be the base's."""
    mapping = config.get("auto_mapping")
    trained = mapping.get("base_model_class") if isinstance(mapping, dict) else None
    if trained and trained != base.architecture:
        raise GGUFPackError(
            f"the adapter was trained on a {clipped(str(trained))} but --base {base.directory} is a "
            f"{base.architecture}: pass the base model the adapter was made for "
            f"({clipped(str(config.get('base_model_name_or_path') or 'unknown'))})"
        )


def _targets(config: dict[str, Any], tensors: dict[str, TensorRef], base: Checkpoint,
             directory: Path) -> list[LoraTarget]:
    """Pair the adapter's tensors into targets; refuse anything that is not a LoRA factor."""
    found: dict[str, dict[str, TensorRef]] = {}
    embedding: set[str] = set()
    others: list[str] = []
    for name, ref in tensors.items():
        if len(name) > MAX_PATTERN_CHARS:  # names are matched against the patterns: keep that linear and short
            raise GGUFPackError(f"{directory / ADAPTER_WEIGHTS}: tensor name {shown(name)} is longer than "
                                f"{MAX_PATTERN_CHARS} characters")
        module = name.removeprefix(_PREFIX)
        suffix = next((s for s in _FACTORS if module.endswith(s)), None)
        if suffix is not None:
            module = module.removesuffix(suffix)
            found.setdefault(module, {})[_FACTORS[suffix]] = ref
            if "embedding" in suffix:
                embedding.add(module)
        elif module.endswith(".base_layer.weight"):
            _check_saved_base_layer(module.removesuffix(".base_layer.weight"), ref, base)
        else:
            others.append(module)
    if others:
        raise GGUFPackError(
            f"{directory / ADAPTER_WEIGHTS} holds {len(others)} tensor(s) that are not LoRA factors, first "
            f"{shown(others[0])}: full weights from modules_to_save, trained tokens or biases, which llama.cpp's "
            f"LoRA cannot apply; {_MERGE_HINT}"
        )
    if not found:
        raise GGUFPackError(f"{directory / ADAPTER_WEIGHTS} holds no LoRA factors (lora_A/lora_B)")
    targets = []
    for module, pair in sorted(found.items()):
        if set(pair) != {"a", "b"}:
            missing = "lora_B" if "a" in pair else "lora_A"
            raise GGUFPackError(f"{directory / ADAPTER_WEIGHTS}: {clipped(module)} has no {missing}")
        transposed = module in embedding or bool(config.get("fan_in_fan_out"))
        rank = _pattern(config, "rank_pattern", module, config["r"])
        targets.append(LoraTarget(module, pair["a"], pair["b"], transposed, rank))
    return targets


def _check_saved_base_layer(module: str, ref: TensorRef, base: Checkpoint) -> None:
    """PEFT saves the base embedding beside an embedding LoRA: fine if it is the base's, not if resized."""
    base_ref = base.tensors.get(module + ".weight")
    if base_ref is None or base_ref.shape != ref.shape:
        have = list(base_ref.shape) if base_ref is not None else "nothing"
        raise GGUFPackError(
            f"the adapter carries {clipped(module)}.weight of shape {list(ref.shape)} but the base model has {have}: "
            f"the vocabulary was resized during fine-tuning; {_MERGE_HINT}"
        )


# --- scales --------------------------------------------------------------------------------------


def _pattern(config: dict[str, Any], key: str, module: str, default: Any) -> Any:
    """PEFT's per-module override: the first pattern that matches the end of the module path."""
    for pattern, value in (config.get(key) or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def _peft_scale(config: dict[str, Any], alpha: float, rank: int) -> float:
    return float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _llama_scale(alpha: float, rank: int) -> float:
    """llama.cpp's ``llama_adapter_lora_weight::get_scale`` at adapter scale 1."""
    return alpha / rank if alpha else 1.0


# --- factors -------------------------------------------------------------------------------------


def _gguf_target(target: LoraTarget, arch: DecoderArchitecture, base: Checkpoint,
                 base_tensors: dict[str, tuple[int, PlannedTensor]], name_map: gguf.TensorNameMap) -> str:
    """The GGUF name of the base weight ``target`` adapts, after checking the base has it, in that shape."""
    base_ref = base.tensors.get(target.weight)
    if base_ref is None:
        raise GGUFPackError(
            f"the adapter adapts {clipped(target.module)}, which the base model {base.directory} does not have: "
            "is --base the model the adapter was trained on?"
        )
    a, b, rank = target.a.shape, target.b.shape, target.rank
    if len(a) != 2 or len(b) != 2 or a[0] != rank or b[1] != rank:
        raise GGUFPackError(f"{clipped(target.module)}: lora_A {list(a)} and lora_B {list(b)} do not make the "
                            f"rank-{rank} "
                            f"pair adapter_config.json describes")
    if target.hf_shape != base_ref.shape:
        raise GGUFPackError(
            f"{clipped(target.module)}: the adapter's delta has shape {list(target.hf_shape)} but the base weight is "
            f"{list(base_ref.shape)}: is --base the model the adapter was trained on?"
        )
    name = arch.gguf_name(target.weight, name_map)
    if name in base_tensors:
        if name == _TOKEN_EMBD and _OUTPUT not in base_tensors:
            raise GGUFPackError(
                f"the adapter adapts {clipped(target.module)}, but the base model ties its output to the token "
                "embeddings: "
                f"llama.cpp would apply the embedding LoRA to the output too; {_MERGE_HINT}"
            )
        return name
    why = ("the base model ties it to the token embeddings" if arch.skip(target.weight, base.config)
           else "the base model's GGUF has no such tensor")
    raise GGUFPackError(f"the adapter adapts {clipped(target.module)} ({name}), but {why}; {_MERGE_HINT}")


def _transformed(target: LoraTarget, arch: DecoderArchitecture, cfg: dict[str, Any], fold: float,
                 a: np.ndarray | None = None, b: np.ndarray | None = None) -> LowRank:
    """The delta as a pair in the GGUF layout: the architecture's own transform applied to it."""
    a = target.a.load_f32() if a is None else a
    b = target.b.load_f32() if b is None else b
    pair = LowRank(a, b * np.float32(fold) if fold != 1 else b)
    out = arch.transform(target.weight, pair.T if target.transposed else pair, cfg)
    if not isinstance(out, LowRank) or out.ndim != 2:
        raise UnsupportedLowRank(f"a result that is not a 2-D low-rank pair ({type(out).__name__})")
    return out


def _llama_factors(pair: LowRank, embedding: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(lora_a, lora_b)``; for token_embd llama.cpp gathers rows of lora_a by token, then applies lora_b."""
    if embedding:
        return pair.b, pair.a.T
    return pair.a, pair.b


def _dry_run(transform: partial[LowRank], target: LoraTarget, arch: DecoderArchitecture) -> LowRank:
    """Run the transform on zeros of the factors' shapes, so an unsupported one fails before any output."""
    try:
        return transform(np.zeros(target.a.shape, np.float32), np.zeros(target.b.shape, np.float32))
    except (UnsupportedLowRank, TypeError) as e:
        raise GGUFPackError(
            f"{clipped(target.module)}: the {type(arch).__name__} converter's transform of {clipped(target.weight)} "
            "cannot be applied "
            f"to a LoRA adapter ({e}); {_MERGE_HINT}"
        ) from e


def _load_factor(transform: partial[LowRank], embedding: bool, index: int) -> np.ndarray:
    return np.ascontiguousarray(_llama_factors(transform(), embedding)[index])
