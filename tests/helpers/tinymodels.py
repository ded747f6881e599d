"""Tiny Hugging Face models for converter tests, made with transformers and a fixed seed.

The Llama family reuses ``examples/make_tiny_model.py`` (the quickstart's own generator), so the
tests exercise exactly the kind of checkpoint the sample ships. Also here: the two sides of every
parity check, transformers' logits and llama.cpp's (through llama-cpp-python).
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


@cache
def _maker() -> ModuleType:
    path = REPO / "examples" / "make_tiny_model.py"
    spec = importlib.util.spec_from_file_location("make_tiny_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_tiny_llama(outdir: Path, **kwargs: Any) -> Path:
    """A tiny llama checkpoint in ``outdir``; kwargs go to ``make_tiny_model.make_tiny_llama``."""
    return _maker().make_tiny_llama(Path(outdir), **kwargs)


def edit_json(path: Path, **changes: Any) -> None:
    """Rewrite keys of a JSON file in place (``None`` deletes a key)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def hf_token_ids(model_dir: Path, text: str) -> list[int]:
    """Token ids from the HF tokenizer, with its special tokens (BOS) as it adds them."""
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(model_dir)(text)["input_ids"])


def hf_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    """transformers' logits, in float32, for every position of ``ids``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).float().eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def llama_cpp_model(gguf_path: Path, n_ctx: int = 128) -> Any:
    """A llama-cpp-python model with logits for every position.

    The KV cache is float32 (llama.cpp's default is float16): otherwise its rounding alone would
    swamp the differences an F32 conversion must be judged by.
    """
    import llama_cpp

    return llama_cpp.Llama(
        str(gguf_path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=2, seed=0,
        type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
    )


def llama_cpp_logits(gguf_path: Path, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits for every position of ``ids``."""
    llm = llama_cpp_model(gguf_path, n_ctx=max(64, len(ids) + 8))
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)
