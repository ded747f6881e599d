"""``BertModel`` / ``BertForMaskedLM`` → GGUF architecture ``bert``, an embedding model.

llama.cpp's bert graph is an encoder: token + position + token-type (row 0) embeddings and a
LayerNorm, then post-norm blocks (separate q/k/v with biases, ``attn_output_norm``, GELU FFN,
``layer_output_norm``), no causal mask, and a pooling step chosen by ``bert.pooling_type``. That is
what sentence-transformers computes from the same weights, so the pooling type comes from its files:
``modules.json`` names the pooling module's directory, whose ``config.json`` says mean, CLS or last
token. Without those files no pooling type is written, and llama.cpp then returns per-token
embeddings unless the caller asks for a pooling.

Left out, because llama.cpp's bert graph has no use for them: the masked-LM head (``cls.*``), the
pooler (``pooler.dense``, BertModel's ``pooler_output``) and the ``position_ids`` buffer. Dropping the
first two changes what the model can do, so the result carries a warning when no sentence-transformers
pooling says they are unused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf

from ggufpack.convert.architectures.base import PlannedTensor, hparam
from ggufpack.convert.architectures.decoder import DecoderArchitecture
from ggufpack.convert.checkpoint import Checkpoint
from ggufpack.convert.files import read_json, read_json_value, relative_path
from ggufpack.errors import GGUFPackError, shown

#: sentence-transformers pooling modes llama.cpp implements
_POOLING = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}
#: their boolean keys in a Pooling module's config.json
_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                  "pooling_mode_lasttoken": "lasttoken", "pooling_mode_max_tokens": "max",
                  "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean"}
_DROPPED = ("cls.", "pooler.")


class Bert(DecoderArchitecture):
    """BERT encoders, with the ``bert.`` prefix of the task models or without it (BertModel)."""

    gguf_arch = gguf.MODEL_ARCH.BERT
    prefix = ""
    blocks = "encoder.layer"

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        if any(name.startswith("bert.") for name in ckpt.tensors):
            self.prefix = "bert."
        return super().tensors(ckpt)

    # --- hyperparameters -------------------------------------------------------------------------

    def write_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        cfg = ckpt.config
        if cfg.get("position_embedding_type", "absolute") != "absolute" or cfg.get("is_decoder"):
            raise GGUFPackError("config.json: only encoder BERT models with absolute position embeddings are "
                                "supported (llama.cpp's bert graph)")
        act = cfg.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            raise GGUFPackError(f"config.json: hidden_act {shown(act)} is not supported: llama.cpp's bert graph "
                                "computes GELU")
        writer.add_block_count(self.block_count(cfg))
        writer.add_context_length(hparam(cfg, "max_position_embeddings"))
        writer.add_embedding_length(hparam(cfg, "hidden_size"))
        writer.add_feed_forward_length(hparam(cfg, "intermediate_size"))
        writer.add_head_count(hparam(cfg, "num_attention_heads"))
        writer.add_layer_norm_eps(float(hparam(cfg, "layer_norm_eps", default=1e-12)))
        writer.add_causal_attention(False)
        writer.add_token_type_count(hparam(cfg, "type_vocab_size", default=2))
        writer.add_vocab_size(hparam(cfg, "vocab_size"))
        pooling = sentence_transformers_pooling(ckpt.directory, warnings)
        if pooling is not None:
            writer.add_pooling_type(_POOLING[pooling])
            return
        warnings.append("no sentence-transformers pooling (modules.json + its Pooling config.json): no pooling "
                        "type written, so llama.cpp returns per-token embeddings unless told --pooling")
        dropped = sorted({n.split(".")[0] for n in ckpt.tensors if n.startswith(_DROPPED)})
        if dropped:
            warnings.append(f"dropped {' and '.join(f'{d}.*' for d in dropped)} (the masked-LM head / BertModel's "
                            "pooler_output layer): llama.cpp's bert graph outputs hidden-state embeddings only")

    # --- tensors ---------------------------------------------------------------------------------

    def top_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        hidden = hparam(cfg, "hidden_size")
        emb = self.prefix + "embeddings."
        return {
            emb + "word_embeddings.weight": (hparam(cfg, "vocab_size"), hidden),
            emb + "position_embeddings.weight": (hparam(cfg, "max_position_embeddings"), hidden),
            emb + "token_type_embeddings.weight": (hparam(cfg, "type_vocab_size", default=2), hidden),
            emb + "LayerNorm.weight": (hidden,), emb + "LayerNorm.bias": (hidden,),
        }

    def required_top_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return [n for n in self.top_shapes(cfg) if "token_type" not in n]  # llama.cpp: token types optional

    def layer_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        hidden, ff = hparam(cfg, "hidden_size"), hparam(cfg, "intermediate_size")
        shapes: dict[str, tuple[int, ...]] = {}
        for name, (rows, cols) in {
            "attention.self.query": (hidden, hidden), "attention.self.key": (hidden, hidden),
            "attention.self.value": (hidden, hidden), "attention.output.dense": (hidden, hidden),
            "intermediate.dense": (ff, hidden), "output.dense": (hidden, ff),
        }.items():
            shapes[name + ".weight"], shapes[name + ".bias"] = (rows, cols), (rows,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[norm + ".weight"] = shapes[norm + ".bias"] = (hidden,)
        return shapes

    def required_layer_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return [n for n in self.layer_shapes(cfg) if n.endswith(".weight") or "LayerNorm" in n]

    def skip(self, hf_name: str, cfg: dict[str, Any]) -> bool:
        return hf_name.startswith(_DROPPED) or hf_name.endswith("embeddings.position_ids")

    def gguf_name(self, hf_name: str, name_map: gguf.TensorNameMap) -> str:
        return super().gguf_name(hf_name.removeprefix(self.prefix), name_map)


def sentence_transformers_pooling(model_dir: Path, warnings: list[str]) -> str | None:
    """The pooling mode (``mean``, ``cls``, ``lasttoken``) sentence-transformers' files ask for, or None.

    A Dense module after the pooling, which llama.cpp does not run, gets a warning.
    """
    modules_path = model_dir / "modules.json"
    if not modules_path.is_file():
        return None
    listed = read_json_value(modules_path)
    try:  # anything but a list of {"type", "path"} objects fails here (a dict iterates over its string keys)
        modules = [(str(m["type"]), str(m.get("path", ""))) for m in listed]
    except (KeyError, TypeError, AttributeError) as e:
        raise GGUFPackError(f"{modules_path}: not a sentence-transformers module list ({e})") from e
    pooling_dirs = [path for kind, path in modules if kind.endswith("Pooling")]
    if any(kind.endswith("Dense") for kind, _ in modules):
        warnings.append(f"{modules_path.name} has a Dense module after the pooling, which llama.cpp does not run: "
                        "its embeddings differ from sentence-transformers'")
    if not pooling_dirs:
        return None
    config_path = model_dir / relative_path(pooling_dirs[0], f"{modules_path} (its Pooling module)") / "config.json"
    if not config_path.is_file():
        raise GGUFPackError(f"{modules_path} names a Pooling module, but {config_path} is missing")
    config = read_json(config_path)
    modes = [mode for key, mode in _POOLING_FLAGS.items() if config.get(key)]
    if not modes and isinstance(config.get("pooling_mode"), str):
        modes = [config["pooling_mode"]]
    if len(modes) != 1 or modes[0] not in _POOLING:
        raise GGUFPackError(
            f"{config_path}: pooling {' + '.join(modes) or 'none'} is not supported; llama.cpp pools by exactly one "
            f"of {', '.join(_POOLING)}"
        )
    return modes[0]
