"""Routed experts: HF's per-expert tensors become one 3-D GGUF tensor per projection and layer.

llama.cpp wants ``blk.N.ffn_{gate,up,down}_exps.weight`` of numpy shape ``[n_expert, rows, cols]``
and the router ``blk.N.ffn_gate_inp.weight``. Hugging Face checkpoints store the experts in one of
two layouts, and a checkpoint may use either (per layer, even):

- classic, as on the hub and as transformers 5's ``save_pretrained`` writes by default: one 2-D
  tensor per expert and projection, ``layers.N.<block>.experts.E.<proj>.weight``;
- fused, transformers 5's in-memory layout (``save_pretrained(save_original_format=False)``):
  ``layers.N.<block>.experts.gate_up_proj`` ``[E, 2F, H]`` (each expert's gate rows, then its up
  rows) and ``layers.N.<block>.experts.down_proj`` ``[E, H, F]``.

Both reduce to a list of per-expert :class:`TensorRef` (in the fused layout, each expert's gate, up
or down block is a contiguous byte range of the file, so it gets a reference of its own). The merged
tensor is stacked from those memory maps only when the writer loads it: peak memory is one merged
tensor plus one expert, whatever the model's size.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import gguf
import numpy as np

from ggufpack.convert.architectures.base import PlannedTensor, hparam
from ggufpack.convert.architectures.decoder import DecoderArchitecture
from ggufpack.convert.checkpoint import Checkpoint
from ggufpack.convert.safetensors import TensorRef
from ggufpack.errors import GGUFPackError, shown

#: the dense MLP a sparse block replaces (with the biases DecoderArchitecture would accept)
DENSE_MLP = tuple(f"mlp.{proj}_proj.{kind}" for proj in ("gate", "up", "down") for kind in ("weight", "bias"))
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ExpertLayout:
    """Where one family keeps its routed experts: the block's module names and the projections'."""

    blocks: tuple[str, ...]  # candidate module names under ``layers.N.``; the first is the hub's
    gate: str  # per-expert projection names in the classic layout
    up: str
    down: str


@dataclass(frozen=True)
class MoeShape:
    """The expert hyperparameters of ``config.json``, checked."""

    n_expert: int
    n_expert_used: int
    n_ff: int  # rows of one expert's gate/up projection
    n_embd: int


def gguf_tensor(kind: gguf.MODEL_TENSOR, layer: int) -> str:
    return gguf.TENSOR_NAMES[kind].format(bid=layer) + ".weight"


@cache
def _owned_pattern(layers: str, blocks: tuple[str, ...]) -> re.Pattern[str]:
    """Names of router and expert tensors below ``layers`` (``model.layers``) in the ``blocks`` modules."""
    alternatives = "|".join(re.escape(b) for b in blocks)
    return re.compile(rf"^{re.escape(layers)}\.\d+\.(?:{alternatives})\.(?:gate\.weight|experts\..+)$")


def stack_experts(refs: Sequence[TensorRef], stored: bool = False) -> np.ndarray:
    """``[len(refs), *shape]`` in float32, or with ``stored`` in the stored dtype (bf16 as its bits).

    Filled one memory-mapped expert at a time, so no expert is ever held twice.
    """
    out = np.empty((len(refs), *refs[0].shape), dtype=refs[0].raw().dtype if stored else np.float32)
    for i, ref in enumerate(refs):
        out[i] = ref.raw() if stored else ref.load_f32()
    return out


def merged(name: str, refs: Sequence[TensorRef]) -> PlannedTensor:
    """The lazily stacked tensor ``name``; the writer may take the stored values when all experts share a dtype."""
    same_dtype = len({ref.dtype for ref in refs}) == 1
    return PlannedTensor(name, (len(refs), *refs[0].shape), partial(stack_experts, refs), refs[0].dtype,
                         partial(stack_experts, refs, stored=True) if same_dtype else None)


def split_fused(ref: TensorRef, n_parts: int) -> list[list[TensorRef]]:
    """``[E, n_parts*R, C]`` → for each part, the E per-expert ``(R, C)`` byte ranges of the file."""
    n_expert, rows, cols = ref.shape
    part_rows = rows // n_parts
    part_bytes = ref.nbytes // (n_expert * n_parts)
    return [
        [dataclasses.replace(ref, name=f"{ref.name}[{e}]", shape=(part_rows, cols),
                             offset=ref.offset + (e * n_parts + p) * part_bytes, nbytes=part_bytes)
         for e in range(n_expert)]
        for p in range(n_parts)
    ]


class RoutedExperts:
    """Plans the router and merged experts of every layer, checking each source tensor."""

    def __init__(self, layout: ExpertLayout, layers: str, moe: MoeShape, n_layer: int) -> None:
        self.layout, self.layers, self.moe, self.n_layer = layout, layers, moe, n_layer
        self.pattern = _owned_pattern(layers, layout.blocks)

    def owns(self, hf_name: str) -> bool:
        """Whether ``hf_name`` is a router or expert tensor (left out of the dense planning)."""
        return self.pattern.match(hf_name) is not None

    def plan(self, tensors: Mapping[str, TensorRef]) -> dict[int, list[PlannedTensor]]:
        """Per layer: the router and the three merged expert tensors. Every owned tensor must be used."""
        owned = {name for name in tensors if self.owns(name)}
        used: set[str] = set()
        planned = {layer: self._layer(tensors, owned, layer, used) for layer in range(self.n_layer)}
        extra = sorted(owned - used)
        if extra:
            raise GGUFPackError(
                f"unexpected tensor {shown(extra[0])} for a {self.n_layer}-layer model with {self.moe.n_expert} "
                f"experts per layer ({len(extra)} such tensor(s))"
            )
        return planned

    def _layer(self, tensors: Mapping[str, TensorRef], owned: set[str], layer: int,
               used: set[str]) -> list[PlannedTensor]:
        base = f"{self.layers}.{layer}."
        block = next((b for b in self.layout.blocks if any(n.startswith(f"{base}{b}.") for n in owned)),
                     self.layout.blocks[0])
        stem = f"{base}{block}."
        moe = self.moe
        router = self._ref(tensors, stem + "gate.weight", (moe.n_expert, moe.n_embd), "the expert router", used)
        fused = next((stem + f"experts.gate_up_proj{s}" for s in ("", ".weight")
                      if stem + f"experts.gate_up_proj{s}" in tensors), None)
        if fused is not None:
            gate_up = self._ref(tensors, fused, (moe.n_expert, 2 * moe.n_ff, moe.n_embd), "fused experts", used)
            down_name = fused.replace("gate_up_proj", "down_proj")
            down = self._ref(tensors, down_name, (moe.n_expert, moe.n_embd, moe.n_ff), "fused experts", used)
            gate, up = split_fused(gate_up, 2)
            (downs,) = split_fused(down, 1)
        else:
            gate, up, downs = (
                [self._ref(tensors, f"{stem}experts.{e}.{proj}.weight", shape, f"expert {e} of {moe.n_expert}", used)
                 for e in range(moe.n_expert)]
                for proj, shape in ((self.layout.gate, (moe.n_ff, moe.n_embd)),
                                    (self.layout.up, (moe.n_ff, moe.n_embd)),
                                    (self.layout.down, (moe.n_embd, moe.n_ff)))
            )
        return [
            PlannedTensor(gguf_tensor(gguf.MODEL_TENSOR.FFN_GATE_INP, layer), router.shape, router.load_f32,
                          router.dtype, router.raw),
            merged(gguf_tensor(gguf.MODEL_TENSOR.FFN_GATE_EXP, layer), gate),
            merged(gguf_tensor(gguf.MODEL_TENSOR.FFN_UP_EXP, layer), up),
            merged(gguf_tensor(gguf.MODEL_TENSOR.FFN_DOWN_EXP, layer), downs),
        ]

    @staticmethod
    def _ref(tensors: Mapping[str, TensorRef], name: str, shape: tuple[int, ...], what: str,
             used: set[str]) -> TensorRef:
        ref = tensors.get(name)
        if ref is None:
            raise GGUFPackError(f"checkpoint lacks tensor {shown(name)} ({what})")
        if ref.shape != shape:
            raise GGUFPackError(f"tensor {shown(name)} has shape {list(ref.shape)}, config.json implies {list(shape)}")
        used.add(name)
        return ref


def interleave(dense: list[PlannedTensor], per_layer: dict[int, list[PlannedTensor]]) -> list[PlannedTensor]:
    """``dense`` with each layer's expert tensors right after that layer's last tensor (``blk.N.``)."""
    out: list[PlannedTensor] = []
    pending = dict(per_layer)
    layers = [int(m.group(1)) if (m := _GGUF_LAYER.match(t.name)) else None for t in dense]
    for i, tensor in enumerate(dense):
        out.append(tensor)
        next_layer = layers[i + 1] if i + 1 < len(dense) else None
        if layers[i] is not None and next_layer != layers[i]:
            out += pending.pop(layers[i], [])
    for layer in sorted(pending):
        out += pending[layer]
    return out


class MoeDecoder(DecoderArchitecture):
    """A decoder whose MLP is a sparse block of routed experts.

    Put it before the dense architecture in the bases (``class Mixtral(MoeDecoder, Llama)``): it
    takes the router and experts out of the dense planning, drops the dense MLP from the expected
    tensors, and adds the expert count keys and the merged tensors.
    """

    expert_layout: ExpertLayout
    #: whether llama.cpp's graph for :attr:`gguf_arch` renormalises the top-k router weights to sum to 1
    renormalises_topk: bool

    def expert_ff(self, cfg: dict[str, Any]) -> int:
        """Rows of one expert's gate/up projection."""
        return int(hparam(cfg, "moe_intermediate_size"))

    def config_renormalises_topk(self, cfg: dict[str, Any]) -> bool:
        return bool(cfg.get("norm_topk_prob", False))

    def moe_shape(self, cfg: dict[str, Any]) -> MoeShape:
        n_expert = int(hparam(cfg, "num_local_experts", "num_experts"))
        n_used = int(hparam(cfg, "num_experts_per_tok"))
        if not 0 < n_used <= n_expert:
            raise GGUFPackError(f"config.json: num_experts_per_tok={n_used} must be between 1 and {n_expert} experts")
        if self.config_renormalises_topk(cfg) != self.renormalises_topk:
            arch = self.gguf_arch.name.lower()
            raise GGUFPackError(
                f"config.json: norm_topk_prob={self.config_renormalises_topk(cfg)}, but llama.cpp's {arch} "
                f"architecture {'always' if self.renormalises_topk else 'never'} renormalises the chosen experts' "
                "weights: the converted model would compute something else"
            )
        return MoeShape(n_expert, n_used, self.expert_ff(cfg), int(hparam(cfg, "hidden_size")))

    def routed_experts(self, cfg: dict[str, Any]) -> RoutedExperts:
        layers = self.prefix + self.blocks
        return RoutedExperts(self.expert_layout, layers, self.moe_shape(cfg), self.block_count(cfg))

    def layer_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        return {k: v for k, v in super().layer_shapes(cfg).items() if k not in DENSE_MLP}

    def required_layer_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return [k for k in super().required_layer_tensors(cfg) if k not in DENSE_MLP]

    def skip(self, hf_name: str, cfg: dict[str, Any]) -> bool:
        owned = _owned_pattern(self.prefix + self.blocks, self.expert_layout.blocks).match(hf_name) is not None
        return owned or super().skip(hf_name, cfg)

    def write_extra_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        super().write_extra_hparams(ckpt, writer, warnings)
        moe = self.moe_shape(ckpt.config)
        writer.add_expert_count(moe.n_expert)
        writer.add_expert_used_count(moe.n_expert_used)

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        experts = self.routed_experts(ckpt.config).plan(ckpt.tensors)
        return interleave(super().tensors(ckpt), experts)
