"""PEFT LoRA adapters → GGUF LoRA: llama.cpp with the adapter must compute what transformers computes
with the adapter merged into the base weights.

Tolerance (F32 adapter on an F32 base): max |Δlogit| <= 1e-4 and the same argmax everywhere, the
converter's F32 bound (see ``test_convert_llama.py``). A LoRA does not loosen it, as measured: the
sides now differ in *how* they apply the delta as well (transformers folds ``W + s·B·A`` into one
matrix, llama.cpp computes ``W x + s·B(A x)`` with two extra small matmuls), which changes float32
rounding only; about 3e-5 observed, the same as without an adapter, while the adapters here move the
logits by O(1..10) (asserted, so the comparison cannot pass vacuously) and a missing q/k permute of
``lora_b`` gives an error of about 10. F16 adapters: <= 0.1 (rounding A and B to half precision).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from ggufpack.convert import convert
from ggufpack.convert.architectures.decoder import permute_rotary
from ggufpack.convert.lowrank import LowRank, UnsupportedLowRank
from ggufpack.errors import GGUFPackError
from ggufpack.progress import Progress
from ggufpack.store import Store

from .helpers.builds import do_build, image_tree, write_context
from .helpers.tiny_gpt2_bert import make_tiny_gpt2
from .helpers.tiny_lora import LLAMA_TARGETS, llama_cpp_lora_logits, make_tiny_lora, merged_logits
from .helpers.tinymodels import edit_json, hf_logits, hf_token_ids, make_tiny_llama

F32_TOL = 1e-4
F16_TOL = 0.1
GPT2_F32_TOL = 1e-2
PROMPT = "The quick brown fox 🦙 jumps über 1234 Hunde.   Привет, 世界!\n\n  end"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("lora-base") / "base")


@pytest.fixture(scope="module")
def base_gguf(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(base, tmp_path_factory.mktemp("lora-base-gguf") / "base.gguf", out_type="F32").path


@pytest.fixture(scope="module")
def ids(base: Path) -> list[int]:
    return hf_token_ids(base, PROMPT)


@pytest.fixture(scope="module")
def base_logits(base: Path, ids: list[int]) -> np.ndarray:
    return hf_logits(base, ids)


@pytest.fixture(scope="module")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lora(base, tmp_path_factory.mktemp("lora") / "adapter")


@pytest.fixture(scope="module")
def reference(base: Path, adapter: Path, ids: list[int]) -> np.ndarray:
    return merged_logits(base, adapter, ids)


def assert_lora_parity(ours: np.ndarray, ref: np.ndarray, base_logits: np.ndarray, tol: float = F32_TOL) -> float:
    assert float(np.abs(ref - base_logits).max()) > 1.0, "the adapter barely changes the model: a vacuous test"
    diff = float(np.abs(ours - ref).max())
    assert diff <= tol, f"max |Δlogit| {diff:.3g} > {tol}"
    if tol < F16_TOL:
        assert (ours.argmax(-1) == ref.argmax(-1)).all()
    return diff


def fields(path: Path) -> dict:
    return {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items() if not k.startswith("GGUF.")}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- numbers -------------------------------------------------------------------------------------


def test_f32_adapter_matches_merged_transformers(base: Path, base_gguf: Path, adapter: Path, ids: list[int],
                                                 reference: np.ndarray, base_logits: np.ndarray, tmp_path: Path):
    result = convert(adapter, tmp_path / "lora.gguf", out_type="F32", model_class="lora", base=base)
    assert (result.architecture, result.hf_architecture, result.out_type) == ("llama", "LlamaForCausalLM", "F32")
    keys = fields(result.path)
    assert keys["general.type"] == "adapter" and keys["adapter.type"] == "lora"
    assert keys["general.architecture"] == "llama" and keys["adapter.lora.alpha"] == 8.0
    tensors = {t.name: tuple(int(d) for d in t.shape) for t in gguf.GGUFReader(result.path).tensors}
    assert len(tensors) == 2 * 2 * len(LLAMA_TARGETS) == result.tensor_count
    # ggml order (ne0 first): lora_a {in, rank}, lora_b {rank, out}
    assert tensors["blk.0.attn_q.weight.lora_a"] == (64, 4) and tensors["blk.0.attn_q.weight.lora_b"] == (4, 64)
    assert tensors["blk.1.ffn_down.weight.lora_a"] == (128, 4) and tensors["blk.1.ffn_down.weight.lora_b"] == (4, 64)
    assert_lora_parity(llama_cpp_lora_logits(base_gguf, result.path, ids), reference, base_logits)


def test_lora_scale_zero_gives_the_base_model(base_gguf: Path, adapter: Path, base: Path, ids: list[int],
                                              base_logits: np.ndarray, tmp_path: Path):
    result = convert(adapter, tmp_path / "lora.gguf", out_type="F32", model_class="lora", base=base)
    off = llama_cpp_lora_logits(base_gguf, result.path, ids, scale=0.0)
    assert float(np.abs(off - base_logits).max()) <= F32_TOL


@pytest.mark.parametrize(
    ("config", "alpha"),
    [
        ({"use_rslora": True}, 8.0 * 2),  # lora_alpha / sqrt(r) = alpha' / r  =>  alpha' = 8 * sqrt(4)
        ({"rank_pattern": {"q_proj": 8, "down_proj": 2}, "alpha_pattern": {"v_proj": 3, "layers.1.mlp.up_proj": 32}},
         8.0),
        ({"target_modules": ["q_proj", "v_proj", "embed_tokens", "lm_head"]}, 8.0),
    ],
    ids=["rslora", "rank-and-alpha-patterns", "embeddings-and-head"],
)
def test_scaling_variants_and_embeddings_match(base: Path, base_gguf: Path, ids: list[int], base_logits: np.ndarray,
                                               tmp_path: Path, config: dict, alpha: float):
    adapter = make_tiny_lora(base, tmp_path / "adapter", seed=7, **config)
    result = convert(adapter, tmp_path / "lora.gguf", out_type="F32", model_class="lora", base=base)
    assert fields(result.path)["adapter.lora.alpha"] == alpha
    ours = llama_cpp_lora_logits(base_gguf, result.path, ids)
    assert_lora_parity(ours, merged_logits(base, adapter, ids), base_logits)
    if "embed_tokens" in config.get("target_modules", ()):
        shapes = {t.name: tuple(int(d) for d in t.shape) for t in gguf.GGUFReader(result.path).tensors}
        # token_embd is gathered by rows: lora_a {rank, vocab}, lora_b {rank, hidden} in ggml order
        assert shapes["token_embd.weight.lora_a"] == (4, 517) and shapes["token_embd.weight.lora_b"] == (4, 64)
        assert "output.weight.lora_a" in shapes


def test_f16_adapter_is_close(base: Path, base_gguf: Path, adapter: Path, ids: list[int], reference: np.ndarray,
                              base_logits: np.ndarray, tmp_path: Path):
    result = convert(adapter, tmp_path / "lora.gguf", model_class="lora", base=base)  # F16 is the default
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(result.path).tensors}
    assert set(types.values()) == {"F16"}
    assert_lora_parity(llama_cpp_lora_logits(base_gguf, result.path, ids), reference, base_logits, tol=F16_TOL)


def test_q8_0_keeps_rank_long_rows_f16_with_one_warning(base: Path, adapter: Path, tmp_path: Path):
    result = convert(adapter, tmp_path / "lora.gguf", out_type="Q8_0", model_class="lora", base=base)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(result.path).tensors}
    assert types["blk.0.attn_q.weight.lora_a"] == "Q8_0" and types["blk.0.attn_q.weight.lora_b"] == "F16"
    assert len(result.warnings) == 1 and "14 LoRA tensor(s) kept F16" in result.warnings[0]


def test_gpt2_conv1d_fan_in_fan_out_adapter_matches(tmp_path: Path):
    """GPT-2's Conv1D weights are stored (in, out) and transposed by its converter; PEFT marks their
    LoRA fan_in_fan_out. Tolerance: GPT-2's own F32 bound (1e-2, ggml's GELU; 4e-3 measured without
    an adapter, 5e-3 with one), while a mishandled transpose shows errors of O(1)."""
    base = make_tiny_gpt2(tmp_path / "gpt2")
    adapter = make_tiny_lora(base, tmp_path / "adapter", target_modules=["c_attn", "c_proj", "c_fc"],
                             fan_in_fan_out=True)
    assert json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    base_gguf = convert(base, tmp_path / "base.gguf", out_type="F32").path
    result = convert(adapter, tmp_path / "lora.gguf", out_type="F32", model_class="lora", base=base)
    assert result.architecture == "gpt2"
    ids = hf_token_ids(base, PROMPT)
    ours = llama_cpp_lora_logits(base_gguf, result.path, ids)
    assert_lora_parity(ours, merged_logits(base, adapter, ids), hf_logits(base, ids), tol=GPT2_F32_TOL)


# --- the low-rank pair the architecture transforms act on ----------------------------------------


def test_low_rank_pair_follows_numpy_for_layout_changes():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 10)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    dense, pair = b @ a, LowRank(a, b)
    cases = [
        lambda w: permute_rotary(w, 2), lambda w: w.T, lambda w: np.transpose(w), lambda w: np.swapaxes(w, 0, 1),
        lambda w: w[2:6], lambda w: w[::2, :], lambda w: w * 2.5,
        lambda w: w.reshape(2, 4, 10)[:, ::-1].reshape(-1, 10),
        lambda w: np.reshape(w, (4, 2, 10)).swapaxes(0, 1).reshape(8, 10), lambda w: (w * np.arange(8.0)[:, None]).T,
    ]
    for case in cases:
        out = case(pair)
        assert isinstance(out, LowRank) and out.rank == 3
        np.testing.assert_allclose(out.b @ out.a, case(dense), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "operation",
    [lambda w: w + 1, lambda w: np.concatenate([w, w]), lambda w: w[:, 1:], lambda w: np.ascontiguousarray(w),
     lambda w: w.reshape(10, 8), lambda w: w * np.ones(10), lambda w: w[0]],
    ids=["offset", "concatenate", "column-slice", "densify", "row-length-reshape", "column-scale", "single-row"],
)
def test_low_rank_pair_refuses_what_has_no_low_rank_form(operation):
    with pytest.raises((UnsupportedLowRank, TypeError)):
        operation(LowRank(np.ones((3, 10), np.float32), np.ones((8, 3), np.float32)))


# --- bad input: a clear error, and nothing left behind ------------------------------------------


def _copy(adapter: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(adapter, tmp_path / "adapter"))


def _lose_b(directory: Path) -> None:
    from safetensors.numpy import load_file, save_file

    path = directory / "adapter_model.safetensors"
    tensors = load_file(path)
    del tensors["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"]
    save_file(tensors, path)


def _pickle(directory: Path) -> None:
    (directory / "adapter_model.safetensors").unlink()
    (directory / "adapter_model.bin").write_bytes(b"never unpickled")


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_pickle, "can execute code"),
        (lambda d: (d / "adapter_config.json").unlink(), "no adapter_config.json: not a PEFT adapter"),
        (lambda d: edit_json(d / "adapter_config.json", peft_type="LOHA"), "a LOHA adapter"),
        (lambda d: edit_json(d / "adapter_config.json", r=8), "do not make the rank-8 pair"),
        (_lose_b, "model.layers.1.mlp.up_proj has no lora_B"),
        (lambda d: edit_json(d / "adapter_config.json", auto_mapping={"base_model_class": "GPT2LMHeadModel"}),
         "trained on a GPT2LMHeadModel but --base"),
        (lambda d: edit_json(d / "adapter_config.json", rank_pattern={"q_proj(": 4}),
         "rank_pattern key 'q_proj(' is not a regular expression"),
        (lambda d: edit_json(d / "adapter_config.json", rank_pattern={"q_proj": "4"}),
         "rank_pattern['q_proj'] must be a positive integer, got '4'"),
        (lambda d: edit_json(d / "adapter_config.json", alpha_pattern={"q_proj": None}),
         "alpha_pattern['q_proj'] must be a number, got None"),
        (lambda d: edit_json(d / "adapter_config.json", r=True), "r must be a positive integer, got True"),
    ],
    ids=["pickle", "no-config", "not-lora", "wrong-rank", "half-pair", "other-architecture", "bad-pattern",
         "string-rank", "null-alpha", "bool-rank"],
)
def test_broken_adapter_is_a_clear_error(base: Path, adapter: Path, tmp_path: Path, breaker, message: str):
    broken = _copy(adapter, tmp_path)
    breaker(broken)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GGUFPackError) as info:
        convert(broken, out / "lora.gguf", model_class="lora", base=base)
    assert message in str(info.value)
    assert leftovers(out) == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"modules_to_save": ["lm_head"]}, "not LoRA factors, first 'lm_head.weight'"),
        ({"use_dora": True}, "DoRA"),
        ({"bias": "all"}, "trains biases"),
    ],
    ids=["modules-to-save", "dora", "bias"],
)
def test_peft_features_llama_cpp_cannot_apply_are_refused(base: Path, tmp_path: Path, config: dict, message: str):
    adapter = make_tiny_lora(base, tmp_path / "adapter", target_modules=["q_proj"], **config)
    with pytest.raises(GGUFPackError, match=message):
        convert(adapter, tmp_path / "lora.gguf", model_class="lora", base=base)
    assert not (tmp_path / "lora.gguf").exists()


def test_adapter_needs_a_matching_base(base: Path, adapter: Path, tmp_path: Path):
    with pytest.raises(GGUFPackError, match=r"needs its base model: pass .* --base") as info:
        convert(adapter, tmp_path / "lora.gguf", model_class="lora")
    assert str(base) in str(info.value)  # names base_model_name_or_path
    one_layer = make_tiny_llama(tmp_path / "one-layer", config={"num_hidden_layers": 1})
    with pytest.raises(GGUFPackError, match=r"adapts model\.layers\.1\..* which the base model .* does not have"):
        convert(adapter, tmp_path / "lora.gguf", model_class="lora", base=one_layer)
    wider = make_tiny_llama(tmp_path / "wider", config={"intermediate_size": 96})
    with pytest.raises(GGUFPackError, match=r"down_proj: .*delta has shape \[64, 128\] but the base weight is \[64, 9"):
        convert(adapter, tmp_path / "lora.gguf", model_class="lora", base=wider)
    mistral = make_tiny_llama(tmp_path / "mistral", architecture="MistralForCausalLM")
    with pytest.raises(GGUFPackError, match=r"trained on a LlamaForCausalLM but --base .* is a MistralForCausalLM"):
        convert(adapter, tmp_path / "lora.gguf", model_class="lora", base=mistral)
    with pytest.raises(GGUFPackError, match="looks like a full model"):
        convert(base, tmp_path / "lora.gguf", model_class="lora", base=base)
    with pytest.raises(GGUFPackError, match="only applies to LoRA"):
        convert(base, tmp_path / "m.gguf", base=base)
    assert not (tmp_path / "lora.gguf").exists() and not (tmp_path / "m.gguf").exists()


def test_embedding_lora_on_a_tied_base_is_refused(tmp_path: Path):
    tied = make_tiny_llama(tmp_path / "tied", config={"tie_word_embeddings": True})
    adapter = make_tiny_lora(tied, tmp_path / "adapter", target_modules=["q_proj", "embed_tokens"])
    with pytest.raises(GGUFPackError, match="ties its output to the token embeddings"):
        convert(adapter, tmp_path / "lora.gguf", model_class="lora", base=tied)


def test_types_and_split_an_adapter_cannot_take(base: Path, adapter: Path, tmp_path: Path):
    with pytest.raises(GGUFPackError, match="cannot be stored as TQ2_0"):
        convert(adapter, tmp_path / "lora.gguf", out_type="TQ2_0", model_class="lora", base=base)
    with pytest.raises(GGUFPackError, match="cannot be split"):
        convert(adapter, tmp_path / "lora.gguf", model_class="lora", base=base, split_max_size=10_000)
    assert leftovers(tmp_path) == []


def test_activated_lora_invocation_tokens_are_written(base: Path, adapter: Path, tmp_path: Path):
    directory = _copy(adapter, tmp_path)
    edit_json(directory / "adapter_config.json", alora_invocation_tokens=[5, 17, 3])
    result = convert(directory, tmp_path / "lora.gguf", model_class="lora", base=base)
    assert fields(result.path)["adapter.alora.invocation_tokens"] == [5, 17, 3]


# --- the build engine: CONVERT --class=lora --base=... ------------------------------------------


def test_build_converts_an_adapter_next_to_its_base(base: Path, adapter: Path, ids: list[int], reference: np.ndarray,
                                                   base_logits: np.ndarray, tmp_path: Path):
    context = write_context(tmp_path / "ctx", (
        "FROM scratch\n"
        "COPY base/ /src/base/\n"
        "COPY my-adapter/ /src/my-adapter/\n"
        "CONVERT --type=F32 /src/base /models/base.F32.gguf\n"
        "CONVERT --class=lora --base=/src/base --type=F32 /src/my-adapter /models/my-adapter.F32.gguf\n"
        'CMD ["-m", "/models/base.F32.gguf", "--lora", "/models/my-adapter.F32.gguf"]\n'
    ))
    shutil.copytree(base, context / "base")
    shutil.copytree(adapter, context / "my-adapter")
    store = Store(tmp_path / "home")
    result = do_build(store, context, progress=Progress("quiet"))
    config = result.image.config["config"]
    (entry,) = config["Adapters"]
    assert entry["CmdParameterValue"] == "/models/my-adapter.F32.gguf" and entry["Architecture"] == "llama"
    tree = image_tree(store, result.image.manifest)
    direct = convert(adapter, tmp_path / "direct.gguf", out_type="F32", model_class="lora", base=base,
                     model_name="my-adapter")
    assert tree["models/my-adapter.F32.gguf"][2] == direct.path.read_bytes()
    (tmp_path / "run").mkdir()
    for name in ("base.F32.gguf", "my-adapter.F32.gguf"):
        (tmp_path / "run" / name).write_bytes(tree[f"models/{name}"][2])
    ours = llama_cpp_lora_logits(tmp_path / "run" / "base.F32.gguf", tmp_path / "run" / "my-adapter.F32.gguf", ids)
    assert_lora_parity(ours, reference, base_logits)
    assert json.loads(json.dumps(config["Labels"]))["gguf.model.architecture"] == "llama"
