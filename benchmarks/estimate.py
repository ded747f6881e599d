"""Estimate of a 70B-class model from its header alone: ``python benchmarks/estimate.py [--reps 20]``.

The header is Llama-3-70B's shape (80 blocks, hidden 8192, 64 heads, 8 KV heads, FFN 28672, vocabulary
128256, Q4_K weights: 723 tensor infos, ~40 GiB of data) written with gguf-py's writer and no tensor
data at all: only the header exists, as in an image config. Each repetition reads the header and
estimates a ``--gpu-layers-step 10`` sweep (10 rows) at an 8192-token context, in this process; the
median wall time is printed (goal: under 0.5 s).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_VOCAB = 80, 8192, 64, 8, 28672, 128256


def write_header(path: Path) -> Path:
    """A header-only GGUF of a 70B llama: metadata, tokenizer and every tensor's info, no data."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(N_LAYER)
    writer.add_context_length(131072)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(N_VOCAB)])
    writer.add_token_types([1] * N_VOCAB)
    q4k, f32 = GGMLQuantizationType.Q4_K, GGMLQuantizationType.F32
    head = N_EMBD // N_HEAD

    def info(name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType) -> None:
        """``shape`` in numpy order (rows, row length); gguf-py takes the row length in bytes."""
        block, size = GGML_QUANT_SIZES[qtype]
        byte_shape = (*shape[:-1], shape[-1] // block * size)
        writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype)

    info("token_embd.weight", (N_VOCAB, N_EMBD), q4k)
    for i in range(N_LAYER):
        info(f"blk.{i}.attn_norm.weight", (N_EMBD,), f32)
        info(f"blk.{i}.attn_q.weight", (N_EMBD, N_EMBD), q4k)
        info(f"blk.{i}.attn_k.weight", (N_HEAD_KV * head, N_EMBD), q4k)
        info(f"blk.{i}.attn_v.weight", (N_HEAD_KV * head, N_EMBD), q4k)
        info(f"blk.{i}.attn_output.weight", (N_EMBD, N_EMBD), q4k)
        info(f"blk.{i}.ffn_norm.weight", (N_EMBD,), f32)
        info(f"blk.{i}.ffn_gate.weight", (N_FF, N_EMBD), q4k)
        info(f"blk.{i}.ffn_up.weight", (N_FF, N_EMBD), q4k)
        info(f"blk.{i}.ffn_down.weight", (N_EMBD, N_FF), q4k)
    info("output_norm.weight", (N_EMBD,), f32)
    info("output.weight", (N_VOCAB, N_EMBD), q4k)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


def run_once(path: Path) -> float:
    from ggufpack.estimate import estimate, resolve
    from ggufpack.estimate.inputs import from_file

    start = time.perf_counter()
    rows = estimate(from_file(path), resolve([], {"ctx_size": 8192}), step=10)
    elapsed = time.perf_counter() - start
    assert len(rows) == 10 and rows[-1].full_offload
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_header(Path(tmp) / "llama-70b-header-only.gguf")
        run_once(path)  # imports
        times = [run_once(path) for _ in range(args.reps)]
        from ggufpack.estimate import estimate, resolve
        from ggufpack.estimate.inputs import from_file
        from ggufpack.estimate.render import table

        print(table(estimate(from_file(path), resolve([], {"ctx_size": 8192}), step=10)))
        median = statistics.median(times) * 1000
        print(f"\nheader {path.stat().st_size} bytes; estimate of 10 rows: median {median:.1f} ms "
              f"over {args.reps} runs (min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
