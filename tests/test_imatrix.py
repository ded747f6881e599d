"""Importance matrices computed in-process through llama.cpp's evaluation callback.

The statistics are checked against an independent computation: the input of ``blk.0.attn_q`` is the
RMS-normalised token embedding, which numpy computes from the GGUF's own weights; its per-column sum
of squares over the calibration tokens (each chunk's first token replaced by BOS) must equal what the
callback collected. With a built ``llama-imatrix`` at hand, the tool's file is compared too.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.quantize.api import make_imatrix
from ggufpack.quantize.imatrix import ImatrixOptions
from ggufpack.quantize.imatrix_file import load_imatrix
from tests.helpers.tiny_quant import CALIBRATION, built_tool_backend, calibration_file, read_gguf_header, tiny_f16

CHUNKS, CTX = 4, 64


@pytest.fixture(scope="module")
def imatrix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("imatrix")
    out = directory / "tiny.imatrix"
    make_imatrix(tiny_f16(), calibration_file(directory), out,
                 ImatrixOptions(chunks=CHUNKS, ctx_size=CTX, threads=2, dataset_name="data/calibration.txt"))
    return out


def _calibration_tokens() -> list[int]:
    import llama_cpp

    llm = llama_cpp.Llama(str(tiny_f16()), vocab_only=True, verbose=False)
    try:
        return list(llm.tokenize(CALIBRATION.removesuffix("\n").encode(), add_bos=True, special=False))
    finally:
        llm.close()


def test_file_layout_is_llama_imatrix_gguf(imatrix: Path) -> None:
    metadata, types = read_gguf_header(imatrix)
    assert metadata == {"general.type": "imatrix", "imatrix.datasets": ["data/calibration.txt"],
                        "imatrix.chunk_count": CHUNKS, "imatrix.chunk_size": CTX}
    assert set(types.values()) == {0}  # F32 only
    data = load_imatrix(imatrix)
    layers = {f"blk.{i}.{t}.weight" for i in range(2)
              for t in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    assert set(data.entries) == layers  # blk.* matmul weights only: not output.weight, not token_embd
    for name, entry in data.entries.items():
        assert entry.counts.tolist() == [CHUNKS * CTX]
        assert entry.sums.shape == (1, 512 if "ffn_down" in name else 256)
        assert (entry.sums > 0).all()
    # the same activations feed q, k and v (and gate and up)
    for layer in range(2):
        q = data.entries[f"blk.{layer}.attn_q.weight"].sums
        assert np.array_equal(q, data.entries[f"blk.{layer}.attn_k.weight"].sums)
        assert np.array_equal(data.entries[f"blk.{layer}.ffn_gate.weight"].sums,
                              data.entries[f"blk.{layer}.ffn_up.weight"].sums)


def test_statistics_match_an_independent_computation(imatrix: Path) -> None:
    reader = gguf.GGUFReader(tiny_f16())
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    eps = float(reader.fields["llama.attention.layer_norm_rms_epsilon"].contents())
    bos = int(reader.fields["tokenizer.ggml.bos_token_id"].contents())
    tokens = np.array(_calibration_tokens()[: CHUNKS * CTX]).reshape(CHUNKS, CTX)
    tokens[:, 0] = bos
    x = tensors["token_embd.weight"][tokens.ravel()]
    normed = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True) + eps) * tensors[
        "blk.0.attn_norm.weight"]
    expected = np.sum(normed.astype(np.float64) ** 2, axis=0)
    got = load_imatrix(imatrix).entries["blk.0.attn_q.weight"].sums[0]
    assert np.max(np.abs(got - expected) / expected) < 1e-4


def test_too_little_text_and_bad_sizes_are_usage_errors(tmp_path: Path) -> None:
    short = calibration_file(tmp_path, "just a few words\n")
    with pytest.raises(UsageError, match="needs at least 2 x ctx-size = 128"):
        make_imatrix(tiny_f16(), short, tmp_path / "x.imatrix", ImatrixOptions(ctx_size=64, threads=2))
    with pytest.raises(UsageError, match="--ctx-size"):
        make_imatrix(tiny_f16(), short, tmp_path / "x.imatrix", ImatrixOptions(ctx_size=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.txt"]


def test_an_error_inside_the_evaluation_callback_stops_it_cleanly(tmp_path: Path) -> None:
    """A model whose activations are NaN: the callback's exception reaches the caller and no file is left."""
    broken = tmp_path / "nan.gguf"
    broken.write_bytes(tiny_f16().read_bytes())
    reader = gguf.GGUFReader(broken, "r+")
    norm = next(t for t in reader.tensors if t.name == "blk.0.attn_norm.weight")
    norm.data[:] = np.nan
    reader.data.flush()
    del reader, norm
    with pytest.raises(GGUFPackError, match=r"non-finite activations in blk\.0\.attn_"):
        make_imatrix(broken, calibration_file(tmp_path), tmp_path / "x.imatrix",
                     ImatrixOptions(chunks=2, ctx_size=CTX, threads=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.txt", "nan.gguf"]


def test_matches_the_llama_imatrix_tool(tmp_path: Path, imatrix: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    backend = built_tool_backend("imatrix", monkeypatch)
    out = tmp_path / "tool.imatrix"
    calibration = calibration_file(tmp_path)
    make_imatrix(tiny_f16(), calibration, out, ImatrixOptions(chunks=CHUNKS, ctx_size=CTX, threads=2,
                                                              dataset_name="data/calibration.txt"),
                 backend=backend.name)
    ours, theirs = load_imatrix(imatrix), load_imatrix(out)
    assert ours.datasets == theirs.datasets and ours.chunk_count == theirs.chunk_count
    assert ours.entries.keys() == theirs.entries.keys()
    for name in ours.entries:
        assert ours.entries[name].counts.tolist() == theirs.entries[name].counts.tolist()
        a, b = ours.entries[name].sums, theirs.entries[name].sums
        assert np.max(np.abs(a - b) / np.abs(b)) < 1e-4, name
