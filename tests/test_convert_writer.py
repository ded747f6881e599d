"""The converter's output path: ternary types, split output, the pipelined writer, failures, memory.

Ternary tolerance: the reference is transformers running the very weights our file holds (each
rounded to ternary or F16 as stored; an F32 GGUF of those weights matches it within 2e-4). llama.cpp's
TQ1_0/TQ2_0 dot products also quantize the activations to Q8_K (8 bits per value, a scale per 256),
and the tiny random model (weights ~10x larger than real ones, so that logits spread) amplifies that
rounding: mean |Δlogit| is about 5% of the logits' standard deviation (0.19 of 4.0), its maximum
2.6, and the argmax agrees at 95% of positions. The test allows a mean of 15% and 80% agreement; a
wrong block layout, scale or row order makes the two unrelated (mean |Δ| ~ the standard deviation,
agreement at chance).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest

from ggufpack.convert import convert
from ggufpack.convert.architectures import architecture_for
from ggufpack.convert.architectures.base import PlannedTensor
from ggufpack.convert.architectures.llama import Llama
from ggufpack.convert.checkpoint import open_checkpoint
from ggufpack.convert.safetensors import bf16_to_f32
from ggufpack.convert.writer import resolve_out_type, tensor_type, write_gguf
from ggufpack.errors import GGUFPackError
from tests.helpers.tinymodels import REPO, hf_token_ids, llama_cpp_logits, make_tiny_llama

Q = gguf.GGMLQuantizationType
PROMPT = "The quick brown fox 🦙 jumps über 1234 Hunde.   Привет, 世界!"
TERNARY_MEAN_TOL = 0.15  # of the logits' standard deviation
TERNARY_ARGMAX_AGREEMENT = 0.8
# Rows of 256 (hidden) quantize to ternary; the MLP's down projection has rows of 384, which ternary
# blocks of 256 do not divide, so it must fall back to F16.
TERNARY_CONFIG = {"hidden_size": 256, "intermediate_size": 384, "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.fixture(scope="module")
def ternary_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("ternary"), config=TERNARY_CONFIG, seed=7)


@pytest.fixture(scope="module")
def bf16_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("bf16"), dtype="bfloat16", seed=8)


def gguf_types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plan(model: Path, out_type: str) -> tuple[list[PlannedTensor], list[gguf.GGMLQuantizationType]]:
    """The converter's own tensor plan and types for ``model``."""
    ckpt = open_checkpoint(model)
    tensors = architecture_for(ckpt.architecture).tensors(ckpt)
    resolved = resolve_out_type(out_type, tensors)
    return tensors, [tensor_type(t, resolved, []) for t in tensors]


def write(tensors: list[PlannedTensor], types: list[gguf.GGMLQuantizationType], dest: Path, **kwargs) -> Path:
    writer = gguf.GGUFWriter(path=None, arch="llama")
    writer.add_string("test.key", "value")
    return write_gguf(writer, tensors, types, dest, **kwargs).path


def ternary_hf_logits(model_dir: Path, gguf_path: Path, ids: list[int]) -> np.ndarray:
    """transformers' logits with every weight rounded as our file stores it (ternary, F16 or F32).

    Ternary and F16 rounding work row by row and the RoPE permute only reorders rows, so rounding the
    Hugging Face weights gives exactly the values llama.cpp multiplies by, in transformers' layout.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).float().eval()
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(gguf_path).tensors}
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, model.config.num_hidden_layers)
    with torch.no_grad():
        for hf_name, param in model.named_parameters():
            qtype = types[name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))]
            weights = param.numpy()
            rounded = gguf.quants.dequantize(gguf.quants.quantize(weights, qtype), qtype)
            param.copy_(torch.from_numpy(np.ascontiguousarray(rounded, dtype=np.float32).reshape(weights.shape)))
        return model(torch.tensor([ids])).logits[0].numpy()


# --- ternary outputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("out_type", ["TQ1_0", "TQ2_0"])
def test_ternary_output_types_and_logits(ternary_model: Path, tmp_path: Path, out_type: str):
    result = convert(ternary_model, tmp_path / "m.gguf", out_type=out_type)
    assert result.out_type == out_type
    assert result.file_type == gguf.LlamaFileType[f"MOSTLY_{out_type}"]
    types = gguf_types(result.path)
    for name, kind in types.items():
        if name in ("token_embd.weight", "output.weight") or name.endswith("ffn_down.weight"):
            want = "F16"  # embeddings and head as llama.cpp's converter keeps them; rows of 384: fallback
        elif name.endswith("_norm.weight"):
            want = "F32"
        else:
            want = out_type
        assert kind == want, name
    assert [w for w in result.warnings if "ffn_down" in w] == [
        f"blk.{i}.ffn_down.weight: row size 384 is not a multiple of 256; kept F16" for i in range(2)
    ]
    ids = hf_token_ids(ternary_model, PROMPT)
    ours = llama_cpp_logits(result.path, ids)
    reference = ternary_hf_logits(ternary_model, result.path, ids)
    spread = float(reference.std())
    assert spread > 1.0  # the logits are not all ~0: the check has teeth
    assert float(np.abs(ours - reference).mean()) <= TERNARY_MEAN_TOL * spread
    assert float((ours.argmax(-1) == reference.argmax(-1)).mean()) >= TERNARY_ARGMAX_AGREEMENT


@pytest.mark.parametrize(
    ("name", "shape", "q8_0", "tq2_0"),
    [
        ("blk.3.attn_q.weight", (256, 256), "Q8_0", "TQ2_0"),
        ("token_embd.weight", (512, 256), "Q8_0", "F16"),
        ("output.weight", (512, 256), "Q8_0", "F16"),
        ("blk.0.ffn_gate_inp.weight", (8, 256), "F32", "F32"),  # MoE router
        ("position_embd.weight", (1024, 256), "F32", "F32"),  # GPT-2
        ("token_types.weight", (2, 256), "F32", "F32"),  # BERT
        ("blk.0.attn_norm.weight", (256,), "F32", "F32"),
        ("blk.0.attn_q.bias", (256,), "F32", "F32"),
        ("blk.0.attn_q.weight.lora_a", (8, 256), "Q8_0", "TQ2_0"),
        ("blk.0.ffn_down.weight", (256, 80), "F16", "F16"),  # rows fit neither block (32, 256)
    ],
)
def test_tensor_types_follow_llama_cpp_converter(name: str, shape: tuple[int, ...], q8_0: str, tq2_0: str):
    tensor = PlannedTensor(name, shape, lambda: np.zeros(shape, np.float32), "F32")
    assert tensor_type(tensor, "Q8_0", []).name == q8_0
    assert tensor_type(tensor, "TQ2_0", []).name == tq2_0


def test_packerfile_convert_types_are_the_converters():
    from ggufpack.convert import OUTPUT_TYPES
    from ggufpack.options.convert import CONVERT_TYPES

    assert {"TQ1_0", "TQ2_0"} <= set(OUTPUT_TYPES)
    assert CONVERT_TYPES == OUTPUT_TYPES  # the Packerfile checks --type without importing the converter


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("bench_convert", REPO / "benchmarks" / "convert.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_ternary_output_equals_llama_cpp_converter(ternary_model: Path, tmp_path: Path):
    """llama.cpp's convert_hf_to_gguf.py picks the same type for every tensor and writes the same bytes."""
    bench = _benchmark_module()
    if not bench.REFERENCE.is_file():
        pytest.skip(f"reference converter not found at {bench.REFERENCE}")
    ours = convert(ternary_model, tmp_path / "ours.gguf", out_type="TQ1_0").path
    argv, env = bench.reference_command(bench.REFERENCE, ternary_model, tmp_path / "ref.gguf", "tq1_0")
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=300)
    assert bench.compare(ours, tmp_path / "ref.gguf") == []
    assert gguf_types(ours) == gguf_types(tmp_path / "ref.gguf")


# --- split output --------------------------------------------------------------------------------


def test_split_output_loads_like_the_single_file(tmp_path: Path):
    model = make_tiny_llama(tmp_path / "model", seed=9)
    single = convert(model, tmp_path / "single" / "m.gguf", out_type="F32")
    limit = 100_000
    split = convert(model, tmp_path / "split" / "m.gguf", out_type="F32", split_max_size=limit)
    shards = sorted((tmp_path / "split").iterdir())
    n = len(shards)
    assert n >= 3
    assert [p.name for p in shards] == [f"m-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    assert split.path == shards[0]
    assert split.size == sum(p.stat().st_size for p in shards)

    readers = [gguf.GGUFReader(p) for p in shards]
    names: list[str] = []
    for i, reader in enumerate(readers):
        fields = reader.fields
        assert fields["split.no"].contents() == i
        assert fields["split.count"].contents() == n
        assert fields["split.tensors.count"].contents() == split.tensor_count
        sizes = [int(t.n_bytes) for t in reader.tensors]
        assert sum(sizes) <= limit or len(sizes) == 1  # a tensor is never cut across shards
        names += [t.name for t in reader.tensors]
    assert "tokenizer.ggml.tokens" in readers[0].fields and "tokenizer.ggml.tokens" not in readers[1].fields
    whole = gguf.GGUFReader(single.path)
    assert names == [t.name for t in whole.tensors]
    data = {t.name: bytes(t.data.view(np.uint8)) for r in readers for t in r.tensors}
    assert all(data[t.name] == bytes(t.data.view(np.uint8)) for t in whole.tensors)

    ids = hf_token_ids(model, PROMPT)
    assert np.array_equal(llama_cpp_logits(split.path, ids), llama_cpp_logits(single.path, ids))


def test_split_larger_than_the_model_writes_one_file(tmp_path: Path, bf16_model: Path):
    result = convert(bf16_model, tmp_path / "m.gguf", split_max_size=1 << 30)
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"] and result.path == tmp_path / "m.gguf"
    assert "split.count" not in gguf.GGUFReader(result.path).fields


def test_bad_split_size_is_refused(tmp_path: Path, bf16_model: Path):
    with pytest.raises(GGUFPackError, match="positive"):
        convert(bf16_model, tmp_path / "m.gguf", split_max_size=0)
    assert list(tmp_path.iterdir()) == []


# --- the pipelined writer: same bytes, both paths ------------------------------------------------


@pytest.mark.parametrize(
    ("model", "out_type"),
    [("bf16_model", "F16"), ("bf16_model", "F32"), ("bf16_model", "BF16"), ("bf16_model", "Q8_0"),
     ("ternary_model", "F16"), ("ternary_model", "TQ2_0")],
)
def test_pipelined_write_equals_serial_and_float32_path(request: pytest.FixtureRequest, tmp_path: Path, model: str,
                                                        out_type: str):
    tensors, types = plan(request.getfixturevalue(model), out_type)
    assert all(t.load_stored is not None for t in tensors)  # Llama's permute moves values only
    serial = write(tensors, types, tmp_path / "serial.gguf", workers=0)
    piped = write(tensors, types, tmp_path / "piped.gguf", workers=2)
    widened = [dataclasses.replace(t, load_stored=None) for t in tensors]
    via_f32 = write(widened, types, tmp_path / "f32.gguf", workers=2)
    assert sha256(serial) == sha256(piped) == sha256(via_f32)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # bf16 beyond F16's range: inf
def test_bf16_to_f16_rounds_every_value_like_float32(tmp_path: Path):
    # every bf16 value 5 times, shuffled: more values than one pass of the converter handles
    bits = np.random.default_rng(0).permutation(np.tile(np.arange(1 << 16, dtype=np.uint16), 5)).reshape(640, 512)
    widened = bf16_to_f32(bits)
    tensor = PlannedTensor("all.weight", bits.shape, lambda: widened, "BF16", lambda: bits)
    direct = write([tensor], [Q.F16], tmp_path / "direct.gguf")
    via_f32 = write([dataclasses.replace(tensor, load_stored=None)], [Q.F16], tmp_path / "f32.gguf")
    assert sha256(direct) == sha256(via_f32)
    data = next(t for t in gguf.GGUFReader(direct).tensors).data
    with np.errstate(over="ignore"):
        expected = widened.astype(np.float16)
    assert np.array_equal(np.asarray(data).view(np.uint16), expected.view(np.uint16))


def test_a_value_changing_transform_never_sees_stored_dtypes(bf16_model: Path, tmp_path: Path):
    class Shifted(Llama):
        def transform(self, hf_name, data, cfg):
            return super().transform(hf_name, data, cfg) + 1

    ckpt = open_checkpoint(bf16_model)
    assert all(t.load_stored is not None for t in Llama().tensors(ckpt))
    shifted = Shifted().tensors(ckpt)
    assert all(t.load_stored is None for t in shifted)
    plain = {t.name: t for t in Llama().tensors(ckpt)}
    path = write(shifted, [Q.F32] * len(shifted), tmp_path / "m.gguf")
    for t in gguf.GGUFReader(path).tensors:
        assert np.array_equal(np.asarray(t.data), plain[t.name].load() + 1)


# --- failures ------------------------------------------------------------------------------------


def _failing_plan() -> list[PlannedTensor]:
    def boom() -> np.ndarray:
        raise GGUFPackError("tensor c.weight: disk on fire")

    ones = np.ones((64, 256), dtype=np.float32)
    return [PlannedTensor(f"{name}.weight", (64, 256), load, "F32")
            for name, load in [("a", lambda: ones), ("b", lambda: ones), ("c", boom), ("d", lambda: ones),
                               ("e", lambda: ones)]]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("split", [None, 70_000])
def test_failure_midway_leaves_no_file_and_no_temp(tmp_path: Path, workers: int, split: int | None):
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.gguf").write_bytes(b"previous")
    tensors = _failing_plan()
    with pytest.raises(GGUFPackError, match="disk on fire"):
        write(tensors, [Q.F16] * len(tensors), out / "m.gguf", workers=workers, split_max_size=split)
    assert sorted(p.name for p in out.iterdir()) == ["m.gguf"]
    assert (out / "m.gguf").read_bytes() == b"previous"


# --- memory --------------------------------------------------------------------------------------

TENSOR_ROWS, TENSOR_COLS, N_TENSORS = 2048, 2048, 24  # 8 MiB of f16 each, 192 MiB in all

MEASURE = textwrap.dedent("""\
    import json, resource, sys
    from pathlib import Path
    import gguf
    from ggufpack.convert.architectures.base import PlannedTensor
    from ggufpack.convert.safetensors import read_header
    from ggufpack.convert.writer import OUT_TYPES, write_gguf

    src, dest, out_type = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    refs = read_header(src)
    tensors = [PlannedTensor(f"blk.{i}.ffn_up.weight", r.shape, r.load_f32, r.dtype, r.raw)
               for i, r in enumerate(refs.values())]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    write_gguf(gguf.GGUFWriter(None, "llama"), tensors, [OUT_TYPES[out_type][0]] * len(tensors), dest)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before, "before_kib": before}))
""")


@pytest.fixture(scope="module")
def many_tensors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A safetensors file of 24 random 8 MiB f16 tensors, written without holding more than one."""
    path = tmp_path_factory.mktemp("many") / "model.safetensors"
    nbytes = TENSOR_ROWS * TENSOR_COLS * 2
    shape = [TENSOR_ROWS, TENSOR_COLS]
    header = {f"t{i}": {"dtype": "F16", "shape": shape, "data_offsets": [i * nbytes, (i + 1) * nbytes]}
              for i in range(N_TENSORS)}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    rng = np.random.default_rng(0)
    with path.open("wb") as f:
        f.write(len(encoded).to_bytes(8, "little") + encoded)
        for _ in range(N_TENSORS):
            f.write(rng.standard_normal((TENSOR_ROWS, TENSOR_COLS), dtype=np.float32).astype(np.float16).tobytes())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("out_type", ["F32", "Q8_0"])
def test_peak_memory_is_a_few_tensors_not_the_model(many_tensors: Path, tmp_path: Path, out_type: str):
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(many_tensors), str(tmp_path / "m.gguf"), out_type],
                          capture_output=True, text=True, check=True, cwd=REPO, timeout=300)
    growth_mib = json.loads(proc.stdout)["growth_kib"] / 1024
    source_mib = TENSOR_ROWS * TENSOR_COLS * 2 / 2**20
    # One tensor's footprint: its mapped source, its float32 values and its output (for F32, the same).
    footprint = source_mib + 2 * source_mib + (0 if out_type == "F32" else source_mib * 34 / 64)
    # 3 tensors in flight (2 workers + the one being written), a 4th for slack in when arrays are freed,
    # and 16 MiB for the interpreter; the model is 24 tensors (F32 with nothing bounding the pipeline
    # grew 232 MiB, over this bound of 112).
    bound = 4 * footprint + 16
    assert growth_mib < bound, f"peak RSS grew {growth_mib:.0f} MiB (bound {bound:.0f} MiB)"
