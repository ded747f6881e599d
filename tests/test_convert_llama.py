"""The numpy converter on tiny Llama-family models: llama.cpp must compute what transformers computes.

Tolerances (logits of the tiny model spread with a standard deviation of about 2):

- F32: max |Δlogit| <= 1e-4 and the same argmax at every position. Both sides compute in float32
  from bit-identical weights (llama.cpp's KV cache set to F32 too), so the only differences are
  summation order (ggml's SIMD blocks vs. torch's BLAS) and libm-level differences in exp, rsqrt and
  SiLU: a few float32 ulps per operation, about 3e-5 observed after two layers. 1e-4 leaves a 3x
  margin yet is thousands of times smaller than what any real conversion bug (a missing RoPE permute,
  a swapped projection, a wrong norm epsilon) produces, which is O(0.1..1).
- F16: max |Δlogit| <= 0.1. Every weight is rounded to half precision (relative error up to 2^-11)
  and ggml's F16 matmuls round the activations to F16 too; about 0.03 observed. The argmax must agree
  wherever transformers' top-two margin exceeds 2 x 0.1 (closer calls may legitimately flip).
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from ggufpack.convert import OUTPUT_TYPES, convert, supported_architectures
from ggufpack.convert.architectures.base import PlannedTensor
from ggufpack.convert.writer import write_gguf
from ggufpack.errors import GGUFPackError
from tests.helpers.tinymodels import (
    edit_json,
    hf_logits,
    hf_token_ids,
    llama_cpp_logits,
    llama_cpp_model,
    make_tiny_llama,
)

F32_TOL = 1e-4
F16_TOL = 0.1
PROMPT = "The quick brown fox 🦙 jumps über 1234 Hunde.   Привет, 世界!\n\n  end"
TOKENIZER_TEXT = (
    "Hello world! It's 2024: 3.14159 and 1234567 apples.\n\n\t  indented    spaces\r\n"
    "Grüße aus Köln — ça va? Привет мир. 你好，世界。こんにちは。안녕하세요. مرحبا.\n"
    "🚀🦙 😶‍🌫️ 👍🏽 🇩🇪 ❤️ <|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>   trailing   "
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def prompt_ids(tiny: Path) -> list[int]:
    return hf_token_ids(tiny, PROMPT)


@pytest.fixture(scope="module")
def reference(tiny: Path, prompt_ids: list[int]) -> np.ndarray:
    return hf_logits(tiny, prompt_ids)


def assert_f32_parity(ours: np.ndarray, ref: np.ndarray) -> None:
    diff = float(np.abs(ours - ref).max())
    assert diff <= F32_TOL, f"max |Δlogit| {diff:.3g} > {F32_TOL}"
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- numbers -------------------------------------------------------------------------------------


def test_f32_logits_match_transformers(tiny: Path, tmp_path: Path, prompt_ids: list[int], reference: np.ndarray):
    result = convert(tiny, tmp_path / "m.gguf", out_type="F32")
    assert result.out_type == "F32" and result.architecture == "llama" and result.warnings == ()
    assert_f32_parity(llama_cpp_logits(result.path, prompt_ids), reference)


def test_f16_logits_match_transformers(tiny: Path, tmp_path: Path, prompt_ids: list[int], reference: np.ndarray):
    result = convert(tiny, tmp_path / "m.gguf")  # F16 is the default
    assert result.out_type == "F16" and result.file_type == gguf.LlamaFileType.MOSTLY_F16
    ours = llama_cpp_logits(result.path, prompt_ids)
    assert float(np.abs(ours - reference).max()) <= F16_TOL
    top2 = np.sort(reference, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * F16_TOL
    assert (ours.argmax(-1) == reference.argmax(-1))[clear].all()


@pytest.mark.parametrize("out_type", ["BF16", "Q8_0"])
def test_other_types_load_and_run(tiny: Path, tmp_path: Path, prompt_ids: list[int], reference: np.ndarray,
                                  out_type: str):
    result = convert(tiny, tmp_path / "m.gguf", out_type=out_type)
    reader = gguf.GGUFReader(result.path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == out_type
    assert types["blk.0.attn_norm.weight"] == "F32"  # norms stay F32
    ours = llama_cpp_logits(result.path, prompt_ids)
    # Coarse: 8-bit mantissas or 8-bit blocks; this catches layout errors, not rounding.
    assert float(np.abs(ours - reference).max()) < 1.5


@pytest.mark.parametrize(
    "config",
    [
        {"tie_word_embeddings": True},
        {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}},
        {"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 64, "rope_theta": 500000.0}},
        {"head_dim": 32, "num_attention_heads": 4, "num_key_value_heads": 1},
    ],
    ids=["tied-embeddings", "rope-linear", "rope-llama3", "wide-head-dim-mqa"],
)
def test_variants_f32_parity(tmp_path: Path, config: dict):
    model = make_tiny_llama(tmp_path / "model", config=config, seed=1)
    ids = hf_token_ids(model, PROMPT)
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    names = {t.name for t in gguf.GGUFReader(result.path).tensors}
    assert ("output.weight" in names) != bool(config.get("tie_word_embeddings"))
    assert ("rope_freqs.weight" in names) == ("llama3" in json.dumps(config))
    assert_f32_parity(llama_cpp_logits(result.path, ids), hf_logits(model, ids))


def test_mistral_architecture(tmp_path: Path):
    model = make_tiny_llama(tmp_path / "model", architecture="MistralForCausalLM", seed=2)
    ids = hf_token_ids(model, PROMPT)
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    assert result.hf_architecture == "MistralForCausalLM" and result.architecture == "llama"
    assert_f32_parity(llama_cpp_logits(result.path, ids), hf_logits(model, ids))


def test_bf16_checkpoint_auto_keeps_bf16_and_reads_exactly(tmp_path: Path):
    model = make_tiny_llama(tmp_path / "model", dtype="bfloat16", seed=3)
    auto = convert(model, tmp_path / "auto.gguf", out_type="AUTO")
    assert auto.out_type == "BF16"
    # bf16 → f32 is exact, so the F32 conversion must match transformers' upcast model at F32 tolerance.
    ids = hf_token_ids(model, PROMPT)
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    assert_f32_parity(llama_cpp_logits(result.path, ids), hf_logits(model, ids))


def test_sharded_checkpoint_gives_the_same_tensors(tiny: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    shutil.copytree(tiny, sharded, ignore=shutil.ignore_patterns("*.safetensors"))
    AutoModelForCausalLM.from_pretrained(tiny).save_pretrained(sharded, max_shard_size="150KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    one = gguf.GGUFReader(convert(tiny, tmp_path / "one.gguf", out_type="F32").path)
    many = gguf.GGUFReader(convert(sharded, tmp_path / "many.gguf", out_type="F32").path)
    a = {t.name: np.array(t.data) for t in one.tensors}
    b = {t.name: np.array(t.data) for t in many.tensors}
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


# --- tokenizer and metadata ----------------------------------------------------------------------


def test_tokenizer_parity(tiny: Path, tmp_path: Path):
    result = convert(tiny, tmp_path / "m.gguf")
    llm = llama_cpp_model(result.path)
    hf = hf_token_ids(tiny, TOKENIZER_TEXT)
    ours = llm.tokenize(TOKENIZER_TEXT.encode("utf-8"), add_bos=True, special=True)
    assert ours == hf
    assert llm.detokenize(ours[1:], special=True).decode("utf-8") == TOKENIZER_TEXT


def test_metadata(tiny: Path, tmp_path: Path):
    result = convert(tiny, tmp_path / "m.gguf")
    fields = gguf.GGUFReader(result.path).fields
    value = {k: f.contents() for k, f in fields.items() if k != "tokenizer.ggml.merges"}
    tok = json.loads((tiny / "tokenizer.json").read_text(encoding="utf-8"))
    special = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert value["general.architecture"] == "llama"
    assert value["general.license"] == "mit"
    assert "tiny" in value["general.tags"]
    assert value["tokenizer.ggml.model"] == "gpt2"
    assert value["tokenizer.ggml.pre"] == "llama-bpe"
    assert value["tokenizer.ggml.bos_token_id"] == special["<|begin_of_text|>"]
    assert value["tokenizer.ggml.eos_token_id"] == special["<|eot_id|>"]
    assert value["tokenizer.ggml.add_bos_token"] is True
    assert "<|start_header_id|>" in value["tokenizer.chat_template"]
    assert value["tokenizer.ggml.token_type"][special["<|eot_id|>"]] == gguf.TokenType.CONTROL
    assert value["llama.attention.head_count_kv"] == 2
    assert result.parameter_count == sum(math.prod(t.shape) for t in gguf.GGUFReader(result.path).tensors)


def test_chat_template_from_tokenizer_config(tiny: Path, tmp_path: Path):
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    (model / "chat_template.jinja").unlink()
    edit_json(model / "tokenizer_config.json", chat_template="{{ messages[0]['content'] }}")
    result = convert(model, tmp_path / "m.gguf")
    assert gguf.GGUFReader(result.path).fields["tokenizer.chat_template"].contents() == "{{ messages[0]['content'] }}"


def test_output_types_are_listed():
    assert OUTPUT_TYPES == ("F32", "F16", "BF16", "Q8_0", "TQ1_0", "TQ2_0", "AUTO")
    assert {"LlamaForCausalLM", "MistralForCausalLM"} <= set(supported_architectures())


# --- bad input: a clear error, and nothing left behind ------------------------------------------


@pytest.fixture
def broken(tiny: Path, tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    return model


def _header(path: Path) -> tuple[dict, int]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), 8 + n


def _rewrite_header(path: Path, header: dict) -> None:
    raw = path.read_bytes()
    _, start = _header(path)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[start:])


def _break_missing_config(model: Path) -> None:
    (model / "config.json").unlink()


def _break_truncated(model: Path) -> None:
    path = model / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])


def _break_lying_offsets(model: Path) -> None:
    path = model / "model.safetensors"
    header, _ = _header(path)
    name = next(n for n in header if n != "__metadata__")
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + 10**9, end + 10**9]
    _rewrite_header(path, header)


def _break_overlapping_offsets(model: Path) -> None:
    path = model / "model.safetensors"
    header, _ = _header(path)
    names = [n for n in header if n != "__metadata__" and header[n]["shape"] == [64]][:2]
    header[names[1]]["data_offsets"] = header[names[0]]["data_offsets"]
    _rewrite_header(path, header)


def _break_unknown_dtype(model: Path) -> None:
    path = model / "model.safetensors"
    header, _ = _header(path)
    name = next(n for n in header if n != "__metadata__")
    header[name]["dtype"] = "F8_E9M9"
    _rewrite_header(path, header)


def _break_architecture(model: Path) -> None:
    edit_json(model / "config.json", architectures=["FrobnicatorForCausalLM"])


def _break_shape(model: Path) -> None:
    edit_json(model / "config.json", intermediate_size=96)


def _break_pickle_only(model: Path) -> None:
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"not read")


def _break_missing_tensor(model: Path) -> None:
    edit_json(model / "config.json", num_hidden_layers=3)


def _break_no_tokenizer(model: Path) -> None:
    (model / "tokenizer.json").unlink()


def _break_deeply_nested_header(model: Path) -> None:
    path = model / "model.safetensors"
    raw = path.read_bytes()
    _, start = _header(path)
    nested = b"[" * 100_000 + b"]" * 100_000  # valid JSON that Python's parser cannot descend into
    path.write_bytes(struct.pack("<Q", len(nested)) + nested + raw[start:])


def _break_tokenizer_ids(model: Path) -> None:
    edit_json(model / "tokenizer.json", added_tokens=[{"id": "x", "content": "<x>"}])


def _break_zero_heads(model: Path) -> None:
    edit_json(model / "config.json", num_attention_heads=0)


def _break_string_size(model: Path) -> None:
    edit_json(model / "config.json", hidden_size="64")


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_break_missing_config, "no config.json"),
        (_break_truncated, "truncated"),
        (_break_lying_offsets, "truncated"),
        (_break_overlapping_offsets, "overlap"),
        (_break_unknown_dtype, "unsupported dtype 'F8_E9M9'"),
        (_break_architecture, "LlamaForCausalLM, MistralForCausalLM"),
        (_break_shape, "config.json implies"),
        (_break_pickle_only, "can execute code"),
        (_break_missing_tensor, "lacks"),
        (_break_no_tokenizer, "tokenizer"),
        (_break_deeply_nested_header, "safetensors header is not valid JSON"),
        (_break_tokenizer_ids, "malformed tokenizer files (ValueError: invalid literal for int"),
        (_break_zero_heads, "num_attention_heads must be a positive number, not 0"),
        (_break_string_size, "hidden_size must be a positive number, not '64'"),
    ],
    ids=lambda v: v.__name__.removeprefix("_break_") if callable(v) else "",
)
def test_bad_input_is_a_clear_error_with_no_output(broken: Path, tmp_path: Path, breaker, message: str):
    breaker(broken)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GGUFPackError, match=message.replace("(", r"\(")) as info:
        convert(broken, out / "m.gguf")
    assert message in str(info.value)
    assert leftovers(out) == []


def test_llama_sliding_window_shorter_than_the_context_is_a_warning(broken: Path, tmp_path: Path):
    edit_json(broken / "config.json", sliding_window=8)
    result = convert(broken, tmp_path / "m.gguf", out_type="F32")
    assert [w for w in result.warnings if "sliding" in w] == [
        "sliding_window=8 is ignored by llama.cpp's llama architecture; "
        "outputs differ from transformers beyond 8 tokens"
    ]


def test_failure_while_writing_leaves_previous_output_untouched(tmp_path: Path):
    dest = tmp_path / "m.gguf"
    dest.write_bytes(b"previous")
    good = np.ones((4, 32), dtype=np.float32)
    tensors = [
        PlannedTensor("a.weight", (4, 32), lambda: good, "F32"),
        PlannedTensor("b.weight", (4, 32), lambda: np.ones((2, 32), dtype=np.float32), "F32"),  # lies
    ]
    writer = gguf.GGUFWriter(path=None, arch="llama")
    with pytest.raises(GGUFPackError, match="planned"):
        write_gguf(writer, tensors, [gguf.GGMLQuantizationType.F16] * 2, dest)
    assert dest.read_bytes() == b"previous"
    assert leftovers(tmp_path) == ["m.gguf"]


def test_quickstart_sample_converts_and_runs(tmp_path: Path):
    sample = Path(__file__).resolve().parent.parent / "Packerfile.samples" / "quickstart" / "tiny-llama"
    result = convert(sample, tmp_path / "m.gguf", model_name="tiny-llama")
    assert gguf.GGUFReader(result.path).fields["general.name"].contents() == "tiny-llama"
    ids = hf_token_ids(sample, PROMPT)
    ours = llama_cpp_logits(result.path, ids)
    assert float(np.abs(ours - hf_logits(sample, ids)).max()) <= F16_TOL

