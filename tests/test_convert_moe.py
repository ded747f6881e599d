"""Mixture-of-experts converters (Mixtral, Qwen2-MoE, Qwen3-MoE) on tiny models: llama.cpp must compute
what transformers computes.

Tolerances are those of ``test_convert_llama.py`` (F32: max |Δlogit| <= 1e-4 and the same argmax
everywhere; F16: <= 0.1), with one precondition of MoE's own. A router picks the top-k experts, a
discontinuous choice: where the k-th and (k+1)-th router logits are nearly tied, rounding alone can
swap an expert, and the output then changes by a whole expert's contribution, not by rounding. So
each parity test first checks, in transformers, that every routing decision of the prompt is clear of
a tie by a margin well above the rounding of the type under test:

- F32: 1e-3, a hundred times the ~1e-5 logit differences both sides show in F32.
- F16: 0.03. Rounding the weights to half precision moves these models' router logits by up to 0.014
  (measured in transformers with F16-rounded weights), so a gap can move by up to ~0.028.

The seeds below were chosen for such margins (0.044, 0.073 and 0.069 on the test prompt; most seeds
have a closer call somewhere among the prompt's ~45 tokens x 2 layers of routing decisions, and
tokenizer changes in the shared tiny-model maker move them). A failed margin check
means "pick another seed", not a converter bug; a failed parity check with the margin met is a bug.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ggufpack.convert import convert
from ggufpack.convert.architectures import architecture_for
from ggufpack.convert.checkpoint import open_checkpoint
from ggufpack.convert.safetensors import TensorRef
from ggufpack.errors import GGUFPackError
from tests.helpers.tiny_moe import make_tiny_moe, resave, router_margin
from tests.helpers.tinymodels import edit_json, hf_logits, hf_token_ids, llama_cpp_logits

F32_TOL = 1e-4
F16_TOL = 0.1
F32_ROUTER_MARGIN = 1e-3
F16_ROUTER_MARGIN = 0.03
PROMPT = "The quick brown fox 🦙 jumps über 1234 Hunde.   Привет, 世界!\n\n  end"

#: model_type → (seed, HF architecture, GGUF architecture)
MODELS = {
    "mixtral": (0, "MixtralForCausalLM", "llama"),
    "qwen2_moe": (16, "Qwen2MoeForCausalLM", "qwen2moe"),
    "qwen3_moe": (13, "Qwen3MoeForCausalLM", "qwen3moe"),
}


class Tiny:
    """One tiny checkpoint with its prompt, transformers' logits and the prompt's router margin."""

    def __init__(self, model_type: str, directory: Path) -> None:
        seed, self.hf_arch, self.gguf_arch = MODELS[model_type]
        self.path = make_tiny_moe(directory, model_type, seed=seed)
        self.ids = hf_token_ids(self.path, PROMPT)
        self.reference = hf_logits(self.path, self.ids)
        self.margin = router_margin(self.path, self.ids)


@pytest.fixture(scope="module", params=list(MODELS))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return Tiny(request.param, tmp_path_factory.mktemp(request.param) / "model")


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_moe(tmp_path_factory.mktemp("mixtral") / "model", "mixtral")


def assert_f32_parity(ours: np.ndarray, reference: np.ndarray) -> None:
    diff = float(np.abs(ours - reference).max())
    assert diff <= F32_TOL, f"max |Δlogit| {diff:.3g} > {F32_TOL}"
    assert (ours.argmax(-1) == reference.argmax(-1)).all()


def copy_of(model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model, tmp_path / "model"))


def drop_tensor(model: Path, name: str) -> None:
    path = model / "model.safetensors"
    tensors = load_file(path)
    del tensors[name]
    save_file(tensors, path, metadata={"format": "pt"})


def assert_refused(model: Path, tmp_path: Path, message: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GGUFPackError) as info:
        convert(model, out / "m.gguf")
    assert message in str(info.value)
    assert list(out.iterdir()) == []


# --- numbers -------------------------------------------------------------------------------------


def test_f32_logits_match_transformers(tiny: Tiny, tmp_path: Path):
    assert tiny.margin > F32_ROUTER_MARGIN, f"router near-tie ({tiny.margin:.2g}) in the test model: change its seed"
    result = convert(tiny.path, tmp_path / "m.gguf", out_type="F32")
    assert (result.hf_architecture, result.architecture, result.warnings) == (tiny.hf_arch, tiny.gguf_arch, ())
    assert_f32_parity(llama_cpp_logits(result.path, tiny.ids), tiny.reference)


def test_f16_logits_match_transformers(tiny: Tiny, tmp_path: Path):
    assert tiny.margin > F16_ROUTER_MARGIN, f"router near-tie ({tiny.margin:.2g}) in the test model: change its seed"
    result = convert(tiny.path, tmp_path / "m.gguf", out_type="F16")
    ours = llama_cpp_logits(result.path, tiny.ids)
    diff = float(np.abs(ours - tiny.reference).max())
    assert diff <= F16_TOL, f"max |Δlogit| {diff:.3g} > {F16_TOL}"
    top2 = np.sort(tiny.reference, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * F16_TOL
    assert (ours.argmax(-1) == tiny.reference.argmax(-1))[clear].all()


def test_fused_layout_gives_the_same_file(tiny: Tiny, tmp_path: Path):
    """transformers 5's fused ``experts.gate_up_proj`` layout converts to exactly the per-expert one's tensors."""
    fused = resave(tiny.path, tmp_path / "fused", fused=True)
    assert not any(".experts.0." in name for name in open_checkpoint(fused).tensors)
    classic = gguf.GGUFReader(convert(tiny.path, tmp_path / "classic.gguf", out_type="F32").path)
    other = gguf.GGUFReader(convert(fused, tmp_path / "fused.gguf", out_type="F32").path)
    assert [t.name for t in classic.tensors] == [t.name for t in other.tensors]
    for a, b in zip(classic.tensors, other.tensors, strict=True):
        assert np.array_equal(np.array(a.data), np.array(b.data)), a.name


def test_bf16_fused_checkpoint_reads_exactly(mixtral: Path, tmp_path: Path):
    """Two-byte experts sliced out of fused tensors: bf16 → F32 is exact, so F32 parity must hold."""
    model = resave(mixtral, tmp_path / "model", fused=True, dtype="bfloat16")
    ids = hf_token_ids(model, PROMPT)
    reference = hf_logits(model, ids)
    assert router_margin(model, ids) > F32_ROUTER_MARGIN
    assert convert(model, tmp_path / "auto.gguf", out_type="AUTO").out_type == "BF16"
    assert_f32_parity(llama_cpp_logits(convert(model, tmp_path / "m.gguf", out_type="F32").path, ids), reference)


# --- file layout ---------------------------------------------------------------------------------


def test_metadata_and_tensor_layout(tiny: Tiny, tmp_path: Path):
    result = convert(tiny.path, tmp_path / "m.gguf", out_type="F16")
    reader = gguf.GGUFReader(result.path)
    value = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.")}
    arch = tiny.gguf_arch
    assert value["general.architecture"] == arch
    assert (value[f"{arch}.expert_count"], value[f"{arch}.expert_used_count"]) == (4, 2)
    if arch == "llama":
        assert value["llama.feed_forward_length"] == 128  # Mixtral's experts are intermediate_size wide
    else:
        assert value[f"{arch}.expert_feed_forward_length"] == 32
    assert value.get(f"{arch}.expert_shared_feed_forward_length") == (48 if arch == "qwen2moe" else None)

    tensors = {t.name: t for t in reader.tensors}
    ff = 128 if arch == "llama" else 32
    # gguf-py lists ne (innermost first): {n_embd, n_ff, n_expert} for gate/up, {n_ff, n_embd, n_expert} for down
    assert list(tensors["blk.1.ffn_gate_exps.weight"].shape) == [64, ff, 4]
    assert list(tensors["blk.1.ffn_up_exps.weight"].shape) == [64, ff, 4]
    assert list(tensors["blk.1.ffn_down_exps.weight"].shape) == [ff, 64, 4]
    assert tensors["blk.1.ffn_down_exps.weight"].tensor_type.name == "F16"
    routers = [n for n in tensors if ".ffn_gate_inp" in n]
    assert len(routers) == (4 if arch == "qwen2moe" else 2)  # + the shared expert's gate
    assert {tensors[n].tensor_type.name for n in routers} == {"F32"}  # as llama.cpp's converter keeps them
    assert not any(n.startswith("blk.0.ffn_gate.") for n in tensors)
    # each layer's tensors stay together, experts included
    layers = [int(n.split(".")[1]) for n in tensors if n.startswith("blk.")]
    assert layers == sorted(layers)
    assert result.parameter_count == sum(math.prod(t.shape) for t in reader.tensors)


def test_merged_tensors_load_lazily_from_the_experts(mixtral: Path, monkeypatch: pytest.MonkeyPatch):
    """Planning reads no weights; a merged tensor reads its experts when, and only when, it is loaded."""
    loads: list[str] = []
    real_load = TensorRef.load_f32

    def counting_load(ref: TensorRef) -> np.ndarray:
        loads.append(ref.name)
        return real_load(ref)

    monkeypatch.setattr(TensorRef, "load_f32", counting_load)
    planned = {t.name: t for t in architecture_for("MixtralForCausalLM").tensors(open_checkpoint(mixtral))}
    assert loads == []
    merged = planned["blk.1.ffn_down_exps.weight"].load()
    prefix = "model.layers.1.block_sparse_moe.experts"
    assert loads == [f"{prefix}.{e}.w2.weight" for e in range(4)]
    stored = load_file(mixtral / "model.safetensors")
    assert np.array_equal(merged, np.stack([stored[f"{prefix}.{e}.w2.weight"] for e in range(4)]))


# --- bad input: a clear error, and nothing left behind ------------------------------------------


def test_missing_expert_is_named(mixtral: Path, tmp_path: Path):
    model = copy_of(mixtral, tmp_path)
    name = "model.layers.1.block_sparse_moe.experts.3.w2.weight"
    drop_tensor(model, name)
    assert_refused(model, tmp_path, f"lacks tensor {name!r} (expert 3 of 4)")


def test_missing_fused_experts_are_named(mixtral: Path, tmp_path: Path):
    model = resave(mixtral, tmp_path / "model", fused=True)
    drop_tensor(model, "model.layers.0.mlp.experts.down_proj")
    assert_refused(model, tmp_path, "lacks tensor 'model.layers.0.mlp.experts.down_proj'")


def test_expert_beyond_the_config_is_refused(mixtral: Path, tmp_path: Path):
    model = copy_of(mixtral, tmp_path)
    tensors = load_file(model / "model.safetensors")
    tensors["model.layers.0.block_sparse_moe.experts.4.w1.weight"] = tensors[
        "model.layers.0.block_sparse_moe.experts.0.w1.weight"].copy()
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    assert_refused(model, tmp_path, "unexpected tensor 'model.layers.0.block_sparse_moe.experts.4.w1.weight'")


def test_expert_count_must_match_the_router(mixtral: Path, tmp_path: Path):
    model = copy_of(mixtral, tmp_path)
    edit_json(model / "config.json", num_local_experts=8)
    assert_refused(model, tmp_path, "has shape [4, 64], config.json implies [8, 64]")


@pytest.mark.parametrize(
    ("model_type", "config", "message"),
    [
        ("qwen3_moe", {"norm_topk_prob": False}, "always renormalises"),
        ("qwen2_moe", {"norm_topk_prob": True}, "never renormalises"),
        ("qwen2_moe", {"mlp_only_layers": [1]}, "layers [1] have a dense MLP"),
        ("mixtral", {"num_experts_per_tok": 5}, "num_experts_per_tok=5 must be between 1 and 4"),
    ],
    ids=["qwen3-no-topk-norm", "qwen2-topk-norm", "qwen2-dense-layer", "mixtral-top5-of-4"],
)
def test_configs_llama_cpp_cannot_run_are_refused(tmp_path: Path, model_type: str, config: dict, message: str):
    model = make_tiny_moe(tmp_path / "model", model_type)
    edit_json(model / "config.json", **config)
    assert_refused(model, tmp_path, message)
