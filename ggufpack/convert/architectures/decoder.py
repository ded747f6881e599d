"""The shared shape of decoder-only transformers laid out like Llama in Hugging Face checkpoints.

``model.embed_tokens``, ``model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
post_attention_layernorm, mlp.{gate,up,down}_proj}``, ``model.norm`` and ``lm_head``: Llama,
Mistral, Qwen 2/3, Gemma and their MoE cousins all start from this. :class:`DecoderArchitecture`
does the common work (hyperparameters, RoPE keys, shape checks against ``config.json``, GGUF
names through gguf-py's tensor map, ordering) and leaves hooks for what differs:

- :meth:`layer_shapes` / :meth:`required_layer_tensors`: the per-layer tensors an architecture has;
- :meth:`transform`: a per-tensor change of the data (a RoPE permute, a norm offset);
- :meth:`extra_tensors`: tensors the checkpoint does not store (``rope_freqs``);
- :meth:`write_extra_hparams`: architecture-specific keys.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import gguf
import numpy as np

from ggufpack.convert.architectures.base import PlannedTensor, hparam, moves_values_only
from ggufpack.convert.checkpoint import Checkpoint, layer_index
from ggufpack.convert.safetensors import TensorRef
from ggufpack.errors import GGUFPackError, shown


def rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings from transformers 5 ``rope_parameters`` or 4.x ``rope_theta`` + ``rope_scaling``."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "full_attention" in params:  # per-layer-type form: the full-attention layers' settings
        params = dict(params["full_attention"])
    if "rope_type" not in params and "type" in params:
        params["rope_type"] = params["type"]
    if "rope_theta" not in params and config.get("rope_theta") is not None:
        params["rope_theta"] = config["rope_theta"]
    return params


def permute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Rotate-half (HF) → interleaved pairs (llama.cpp's non-NeoX RoPE), head by head, along axis 0."""
    rows = weights.shape[0]
    if rows % (2 * n_head):
        raise GGUFPackError(f"cannot permute {weights.shape} over {n_head} heads")
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def llama3_rope_factors(params: dict[str, Any], head_dim: int) -> np.ndarray:
    """Per-frequency divisors of Llama 3.1's RoPE scaling (what ``rope_freqs.weight`` holds)."""
    base = float(params.get("rope_theta", 10000.0))
    factor = float(params.get("factor", 8.0))
    low = float(params.get("low_freq_factor", 1.0))
    high = float(params.get("high_freq_factor", 4.0))
    old_ctx = float(params.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    middle = 1.0 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, middle))
    return out.astype(np.float32)


def check_full_width_heads(cfg: dict[str, Any], head_dim: int, arch_name: str) -> None:
    """Refuse ``head_dim x num_attention_heads != hidden_size`` for graphs that assume equality."""
    width = head_dim * hparam(cfg, "num_attention_heads")
    if width != hparam(cfg, "hidden_size"):
        raise GGUFPackError(
            f"config.json: head_dim x num_attention_heads = {width} differs from hidden_size, which llama.cpp's "
            f"{arch_name} architecture cannot run"
        )


def warn_ignored_sliding_window(cfg: dict[str, Any], arch_name: str, warnings: list[str]) -> None:
    """Warn about a ``sliding_window`` shorter than the context, for graphs that attend to the whole past."""
    window, n_ctx = cfg.get("sliding_window"), cfg.get("max_position_embeddings")
    if window and n_ctx and window < n_ctx:
        warnings.append(f"sliding_window={window} is ignored by llama.cpp's {arch_name} architecture; "
                        f"outputs differ from transformers beyond {window} tokens")


def tensor_order(hf_name: str) -> tuple[int, int]:
    """Embeddings first, then blocks in order, then the output norm and head."""
    if "embed" in hf_name and layer_index(hf_name) is None and "norm" not in hf_name:
        return (0, 0)
    index = layer_index(hf_name)
    return (1, index) if index is not None else (2, 0)


class DecoderArchitecture:
    """A Llama-shaped decoder; subclasses set :attr:`gguf_arch` and override the hooks they need."""

    gguf_arch: gguf.MODEL_ARCH
    #: HF tensor name suffixes that hold nothing llama.cpp needs
    ignored_suffixes: tuple[str, ...] = ("rotary_emb.inv_freq",)
    #: rope_type values this architecture can express in GGUF
    rope_types: tuple[str, ...] = ("default", "linear", "yarn")
    #: the HF prefix of the decoder (``model.`` for most, ``model.language_model.`` for multimodal wrappers)
    prefix: str = "model."
    #: the HF name of the block list after :attr:`prefix` (``h`` in GPT-2, ``encoder.layer`` in BERT)
    blocks: str = "layers"

    # --- hyperparameters -------------------------------------------------------------------------

    def block_count(self, cfg: dict[str, Any]) -> int:
        return int(hparam(cfg, "num_hidden_layers"))

    def head_dim(self, cfg: dict[str, Any]) -> int:
        return int(hparam(cfg, "head_dim", default=hparam(cfg, "hidden_size") // hparam(cfg, "num_attention_heads")))

    def rope_dim(self, cfg: dict[str, Any]) -> int:
        """How many dimensions of each head RoPE rotates: all of them unless a subclass says otherwise."""
        return self.head_dim(cfg)

    def write_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        cfg = ckpt.config
        n_head = hparam(cfg, "num_attention_heads")
        head_dim = self.head_dim(cfg)
        n_ctx = hparam(cfg, "max_position_embeddings", default=None)
        writer.add_block_count(self.block_count(cfg))
        if n_ctx is not None:
            writer.add_context_length(n_ctx)
        writer.add_embedding_length(hparam(cfg, "hidden_size"))
        writer.add_feed_forward_length(hparam(cfg, "intermediate_size"))
        writer.add_head_count(n_head)
        writer.add_head_count_kv(hparam(cfg, "num_key_value_heads", default=n_head))
        writer.add_layer_norm_rms_eps(float(hparam(cfg, "rms_norm_eps", default=1e-5)))
        writer.add_vocab_size(hparam(cfg, "vocab_size"))
        writer.add_rope_dimension_count(self.rope_dim(cfg))
        if cfg.get("head_dim") is not None:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        self.write_rope(cfg, writer)
        self.write_extra_hparams(ckpt, writer, warnings)

    def write_rope(self, cfg: dict[str, Any], writer: gguf.GGUFWriter) -> None:
        rope = rope_parameters(cfg)
        writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
        kind = rope.get("rope_type") or "default"
        if kind not in self.rope_types:
            raise GGUFPackError(
                f"config.json: rope scaling type {shown(kind)} is not supported for "
                f"{self.gguf_arch.name.lower()} models"
            )
        factor = rope.get("factor")
        if kind == "linear" and factor is not None:
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(factor))
        elif kind == "yarn" and factor is not None:
            writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            writer.add_rope_scaling_factor(float(factor))
            orig = rope.get("original_max_position_embeddings")
            if orig is None:
                raise GGUFPackError("config.json: yarn rope scaling without original_max_position_embeddings")
            writer.add_rope_scaling_orig_ctx_len(int(orig))
            for key, add in (("attention_factor", writer.add_rope_scaling_yarn_attn_factor),
                             ("beta_fast", writer.add_rope_scaling_yarn_beta_fast),
                             ("beta_slow", writer.add_rope_scaling_yarn_beta_slow)):
                if rope.get(key) is not None:
                    add(float(rope[key]))

    def write_extra_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        """Architecture-specific keys; nothing by default."""

    # --- tensors ---------------------------------------------------------------------------------

    def top_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Shapes of the tensors outside the blocks, by HF name."""
        hidden, vocab = hparam(cfg, "hidden_size"), hparam(cfg, "vocab_size")
        return {
            self.prefix + "embed_tokens.weight": (vocab, hidden),
            self.prefix + "norm.weight": (hidden,),
            "lm_head.weight": (vocab, hidden),
        }

    def layer_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Shapes of one block's tensors, by HF name suffix after ``layers.N.`` (optional ones included)."""
        hidden = hparam(cfg, "hidden_size")
        n_head = hparam(cfg, "num_attention_heads")
        n_kv = hparam(cfg, "num_key_value_heads", default=n_head)
        ff = hparam(cfg, "intermediate_size")
        q, kv = n_head * self.head_dim(cfg), n_kv * self.head_dim(cfg)
        return {
            "input_layernorm.weight": (hidden,), "post_attention_layernorm.weight": (hidden,),
            "self_attn.q_proj.weight": (q, hidden), "self_attn.k_proj.weight": (kv, hidden),
            "self_attn.v_proj.weight": (kv, hidden), "self_attn.o_proj.weight": (hidden, q),
            "self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,),
            "self_attn.v_proj.bias": (kv,), "self_attn.o_proj.bias": (hidden,),
            "mlp.gate_proj.weight": (ff, hidden), "mlp.up_proj.weight": (ff, hidden),
            "mlp.down_proj.weight": (hidden, ff),
            "mlp.gate_proj.bias": (ff,), "mlp.up_proj.bias": (ff,), "mlp.down_proj.bias": (hidden,),
        }

    def required_top_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return [self.prefix + "embed_tokens.weight", self.prefix + "norm.weight"]

    def required_layer_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return [
            "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
            "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
        ]

    def expected_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        shapes = dict(self.top_shapes(cfg))
        per_layer = self.layer_shapes(cfg)
        for i in range(self.block_count(cfg)):
            shapes.update({f"{self.prefix}{self.blocks}.{i}.{k}": v for k, v in per_layer.items()})
        return shapes

    def required_tensors(self, cfg: dict[str, Any]) -> list[str]:
        names = list(self.required_top_tensors(cfg))
        per_layer = self.required_layer_tensors(cfg)
        for i in range(self.block_count(cfg)):
            names += [f"{self.prefix}{self.blocks}.{i}.{k}" for k in per_layer]
        return names

    def skip(self, hf_name: str, cfg: dict[str, Any]) -> bool:
        """Tensors left out: ignored suffixes, and ``lm_head`` when the embeddings are tied."""
        if hf_name.endswith(self.ignored_suffixes):
            return True
        return bool(cfg.get("tie_word_embeddings", False)) and hf_name == "lm_head.weight"

    def gguf_name(self, hf_name: str, name_map: gguf.TensorNameMap) -> str:
        """The GGUF name of an HF tensor, through gguf-py's table."""
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFPackError(f"no GGUF name for tensor {shown(hf_name)}")
        return name

    @moves_values_only
    def transform(self, hf_name: str, data: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
        """Change one tensor's float32 data on its way out; identity by default.

        Mark an override with :func:`~.base.moves_values_only` when it only permutes or reshapes: it then also
        runs on the stored dtype and the writer skips the float32 round trip.
        """
        return data

    def transform_moves_only(self, hf_name: str, cfg: dict[str, Any]) -> bool:
        """Whether :meth:`transform` only moves this tensor's values; override to keep the fast path for the
        tensors a value-changing transform leaves alone."""
        return bool(getattr(self.transform, "moves_values_only", False))

    def gguf_shape(self, hf_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape :meth:`transform` gives a tensor of HF shape ``shape``: unchanged by default."""
        return shape

    def extra_tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        """Tensors the checkpoint does not hold but llama.cpp wants; none by default."""
        return []

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        cfg = ckpt.config
        n_layer = self.block_count(cfg)
        expected = self.expected_shapes(cfg)
        name_map = gguf.get_tensor_name_map(self.gguf_arch, n_layer)
        planned: list[tuple[tuple[int, int], PlannedTensor]] = []
        seen: set[str] = set()
        for hf_name, ref in ckpt.tensors.items():
            if self.skip(hf_name, cfg):
                continue
            want = expected.get(hf_name)
            if want is None:
                raise GGUFPackError(
                    f"unexpected tensor {shown(hf_name)} for a {n_layer}-layer {self.gguf_arch.name.lower()} model"
                )
            if ref.shape != want:
                raise GGUFPackError(f"tensor {shown(hf_name)} has shape {list(ref.shape)}, "
                                    f"config.json implies {list(want)}")
            load = partial(self._load, hf_name, ref, cfg)
            stored = partial(self._load_stored, hf_name, ref, cfg) if self.transform_moves_only(hf_name, cfg) else None
            out = PlannedTensor(self.gguf_name(hf_name, name_map), self.gguf_shape(hf_name, ref.shape), load, ref.dtype,
                                stored)
            planned.append((tensor_order(hf_name), out))
            seen.add(hf_name)
        missing = [n for n in self.required_tensors(cfg) if n not in seen]
        if missing:
            raise GGUFPackError(f"checkpoint lacks {len(missing)} tensor(s), first {shown(missing[0])}")
        planned += [((-1, 0), t) for t in self.extra_tensors(ckpt)]
        planned.sort(key=lambda item: item[0])
        return [p for _, p in planned]

    def _load(self, hf_name: str, ref: TensorRef, cfg: dict[str, Any]) -> np.ndarray:
        return self.transform(hf_name, ref.load_f32(), cfg)

    def _load_stored(self, hf_name: str, ref: TensorRef, cfg: dict[str, Any]) -> np.ndarray:
        return self.transform(hf_name, ref.raw(), cfg)
