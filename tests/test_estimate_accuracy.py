"""The estimate against what llama.cpp itself allocates, measured.

Small models of several architectures (Llama; Gemma 2 with sliding-window layers; a BERT embedding
encoder; a Qwen2-MoE) are made with transformers, converted by ggufpack, loaded on the CPU by
llama-cpp-python with the settings of each case, and llama.cpp's log lines for its model, KV, output
and compute buffers are compared with ``ggufpack.estimate`` for the same settings.

Tolerance: each component within 5% of llama.cpp's figure or 1 MiB, whichever is larger (stricter than
the 16 MiB the issue allows for small buffers: here every buffer is small, and 16 MiB would let
a missing KQ matrix pass), and the total within 10%. Run with ``-s`` to see the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ggufpack.estimate import estimate, resolve
from ggufpack.estimate.inputs import from_file
from tests.helpers.tiny_estimate import COMPONENTS, SMALL_LLAMA, Comparison, Measured, measure, small_gguf

SMALL_GEMMA = {"vocab_size": 4096, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "sliding_window": 128,
               "layer_types": ["sliding_attention", "full_attention"] * 2}
SMALL_BERT = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024,
              "max_position_embeddings": 512}
SMALL_MOE = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 512, "moe_intermediate_size": 256, "shared_expert_intermediate_size": 512}


@dataclass(frozen=True)
class Case:
    model: str
    ctx: int
    ubatch: int = 512
    fa: bool = False
    cache: str = "f16"
    n_seq: int = 1
    mmap: bool = True

    @property
    def embedding(self) -> bool:
        return self.model == "bert"

    @property
    def label(self) -> str:
        return (f"{self.model} c={self.ctx} ub={self.ubatch} fa={'on' if self.fa else 'off'} {self.cache}"
                f" np={self.n_seq}{'' if self.mmap else ' no-mmap'}")


CASES = [
    Case("llama", 512), Case("llama", 1024), Case("llama", 4096), Case("llama", 1024, ubatch=128),
    Case("llama", 1000, ubatch=300), Case("llama", 1024, fa=True), Case("llama", 4096, fa=True),
    Case("llama", 4096, fa=True, cache="q8_0"), Case("llama", 1024, cache="q8_0"),
    Case("llama", 4096, n_seq=4), Case("llama", 4096, fa=True, n_seq=4), Case("llama", 1024, mmap=False),
    Case("gemma2", 1024), Case("gemma2", 4096), Case("gemma2", 4096, fa=True),
    Case("gemma2", 4096, fa=True, cache="q8_0"), Case("gemma2", 4096, fa=True, n_seq=4),
    Case("bert", 512), Case("bert", 512, ubatch=128), Case("bert", 512, fa=True),
    Case("qwen2moe", 1024), Case("qwen2moe", 4096), Case("qwen2moe", 4096, fa=True),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.helpers.tiny_gemma import make_tiny_gemma
    from tests.helpers.tiny_gpt2_bert import make_tiny_bert
    from tests.helpers.tiny_moe import make_tiny_moe
    from tests.helpers.tinymodels import make_tiny_llama

    work = tmp_path_factory.mktemp("estimate-accuracy")
    return {
        "llama": small_gguf(make_tiny_llama, work, "llama", vocab_size=8192, config=SMALL_LLAMA),
        "gemma2": small_gguf(make_tiny_gemma, work, "gemma2", model_type="gemma2", config=SMALL_GEMMA),
        "bert": small_gguf(make_tiny_bert, work, "bert", config=SMALL_BERT),
        "qwen2moe": small_gguf(make_tiny_moe, work, "qwen2moe", vocab_size=4096, model_type="qwen2_moe",
                               config=SMALL_MOE),
    }


def _estimated(path: Path, case: Case) -> dict[str, int]:
    options = resolve([], {
        "ctx_size": case.ctx, "ubatch_size": case.ubatch, "batch_size": case.ubatch if case.embedding else 2048,
        "parallel": case.n_seq, "flash_attn": "on" if case.fa else "off", "cache_type_k": case.cache,
        "cache_type_v": case.cache if case.fa else "f16", "gpu_layers": 0, "mmap": case.mmap,
        "embedding": case.embedding,
    })
    host = estimate(from_file(path), options)[0].devices.host
    return {c: getattr(host, c) for c in COMPONENTS}


def _measured(path: Path, case: Case) -> Measured:
    return measure(path, n_ctx=case.ctx, n_ubatch=case.ubatch, n_batch=case.ubatch if case.embedding else 2048,
                   n_seq=case.n_seq, flash_attn=case.fa, type_k=case.cache, type_v=case.cache if case.fa else "f16",
                   embeddings=case.embedding, use_mmap=case.mmap)


def test_estimate_matches_llama_cpp(models: dict[str, Path]) -> None:
    comparison = Comparison("measured")
    for case in CASES:
        path = models[case.model]
        m = _measured(path, case)
        comparison.add(case.label, _estimated(path, case), {c: getattr(m, c) for c in COMPONENTS})
    comparison.check()
