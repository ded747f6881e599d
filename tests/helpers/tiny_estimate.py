"""Small models for the memory-estimate accuracy tests, and what llama.cpp says it allocated for them.

The makers of the converter tests build *tiny* models (hidden 64, vocabulary ~500), where every buffer
is below llama.cpp's minimums and rounding; here the same makers are used with "small" sizes (hidden
256, 4 layers, vocabulary several thousand) so that weights, KV cache, compute and output buffers are
each large enough to be compared. The vocabulary is widened after the fact (:func:`widen_vocab`): the
converter pads the token list to ``vocab_size``, as it does for real checkpoints.

:func:`measure` loads a GGUF with llama-cpp-python on the CPU (low-level API, so that ``n_seq_max``
and ``kv_unified`` can be set as llama-server sets them) and parses the buffer sizes llama.cpp logs:
``load_tensors: CPU_Mapped model buffer size = ...``, ``llama_kv_cache: CPU KV buffer size = ...``,
``llama_context: CPU output buffer size = ...``, ``sched_reserve: CPU compute buffer size = ...``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIB = 1024 * 1024

_BUFFER_LINES = {
    "weights": re.compile(r"(\S+) model buffer size = +([\d.]+) MiB"),
    "kv": re.compile(r"(\S+) KV buffer size = +([\d.]+) MiB"),
    "output": re.compile(r"(\S+) +output buffer size = +([\d.]+) MiB"),
    "compute": re.compile(r"(\S+) compute buffer size = +([\d.]+) MiB"),
}


@dataclass(frozen=True)
class Measured:
    """Bytes llama.cpp reported for each component (summed over its buffers), and the raw log."""

    weights: int
    kv: int
    compute: int
    output: int
    log: str

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute + self.output


def parse_buffers(log: str) -> dict[str, int]:
    """Bytes per component from llama.cpp's log (sizes are printed in MiB with two decimals)."""
    out = {}
    for component, pattern in _BUFFER_LINES.items():
        out[component] = round(sum(float(m[2]) for m in pattern.finditer(log)) * MIB)
    return out


@contextmanager
def _llama_log() -> Iterator[list[str]]:
    from ggufpack.quantize.inprocess import captured_llama_log

    with captured_llama_log() as lines:
        yield lines


def measure(path: Path, *, n_ctx: int, n_batch: int = 2048, n_ubatch: int = 512, n_seq: int = 1,
            kv_unified: bool = False, type_k: str = "f16", type_v: str = "f16", flash_attn: bool = False,
            embeddings: bool = False, use_mmap: bool = True, swa_full: bool = False) -> Measured:
    """Load ``path`` on the CPU with these context settings; return what llama.cpp allocated."""
    import llama_cpp
    from gguf.constants import GGMLQuantizationType

    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = n_ctx
    cparams.n_batch = n_batch
    cparams.n_ubatch = n_ubatch
    cparams.n_seq_max = n_seq
    cparams.kv_unified = kv_unified
    cparams.n_threads = cparams.n_threads_batch = 1
    cparams.type_k = GGMLQuantizationType[type_k.upper()].value
    cparams.type_v = GGMLQuantizationType[type_v.upper()].value
    cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                               else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    cparams.embeddings = embeddings
    cparams.swa_full = swa_full  # llama-server's default (the C API's is true)
    with _llama_log() as lines:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise RuntimeError(f"llama.cpp could not load {path}:\n{''.join(lines)[-2000:]}")
        try:
            ctx = llama_cpp.llama_init_from_model(model, cparams)
            if not ctx:
                raise RuntimeError(f"llama.cpp could not make a context for {path}:\n{''.join(lines)[-2000:]}")
            llama_cpp.llama_free(ctx)
        finally:
            llama_cpp.llama_model_free(model)
    log = "".join(lines)
    return Measured(**parse_buffers(log), log=log)


# --- small models ------------------------------------------------------------------------------


def widen_vocab(model_dir: Path, vocab_size: int, *, seed: int = 0) -> Path:
    """Give a checkpoint ``vocab_size`` rows of (token) embeddings and output: random rows are appended
    to every tensor whose first dimension is the old vocabulary size, and ``config.json`` says so."""
    from safetensors.numpy import load_file, save_file

    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    text = config.get("text_config", config)
    old = int(text["vocab_size"])
    rng = np.random.default_rng(seed)
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors = load_file(file)
        for name, value in tensors.items():
            if value.ndim == 2 and value.shape[0] == old and ("embed" in name or "lm_head" in name):
                extra = rng.normal(0, 0.02, (vocab_size - old, value.shape[1])).astype(value.dtype)
                tensors[name] = np.concatenate([value, extra])
        save_file(tensors, file, metadata={"format": "pt"})
    text["vocab_size"] = vocab_size
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return model_dir


SMALL_LLAMA: dict[str, Any] = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
                               "num_attention_heads": 8, "num_key_value_heads": 2}


def small_gguf(maker: Any, workdir: Path, name: str, *, vocab_size: int | None = None, out_type: str = "F16",
               **maker_kwargs: Any) -> Path:
    """Make a checkpoint with ``maker(dir, **maker_kwargs)``, widen its vocabulary, convert it to GGUF."""
    from ggufpack.convert import convert

    src = maker(workdir / name, **maker_kwargs)
    if vocab_size is not None:
        widen_vocab(src, vocab_size)
    out = workdir / f"{name}.{out_type}.gguf"
    convert(src, out, out_type=out_type)
    return out


# --- comparing ---------------------------------------------------------------------------------

COMPONENTS = ("weights", "kv", "compute", "output")


@dataclass
class Comparison:
    """Estimated against measured bytes, per component, for several cases: a printable table and the
    cases outside the tolerance (a component: ``share`` of the measured value or ``floor`` bytes,
    whichever is larger; the total: ``total_share``)."""

    measured_as: str
    share: float = 0.05
    floor: int = MIB
    total_share: float = 0.10
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, label: str, estimated: dict[str, int], measured: dict[str, int]) -> None:
        got, want = sum(estimated[c] for c in COMPONENTS), sum(measured[c] for c in COMPONENTS)
        self.lines.append(f"{label:<44}" + "".join(f" {estimated[c] / MIB:8.2f}/{measured[c] / MIB:8.2f}"
                                                  for c in COMPONENTS)
                          + f" {got / MIB:8.2f}/{want / MIB:8.2f} {100 * (got - want) / max(want, 1):+6.2f}%")
        for c in COMPONENTS:
            if abs(estimated[c] - measured[c]) > max(self.share * measured[c], self.floor):
                self.failures.append(f"{label}: {c} estimated {estimated[c] / MIB:.2f} MiB, {self.measured_as} "
                                     f"{measured[c] / MIB:.2f}")
        if abs(got - want) > self.total_share * want:
            self.failures.append(f"{label}: total estimated {got / MIB:.2f}, {self.measured_as} {want / MIB:.2f}")

    def check(self) -> None:
        head = f"{'case':<44}" + "".join(f"{c:>18}" for c in (*COMPONENTS, "total"))
        report = "\n".join([f"{head}  (MiB estimated/{self.measured_as})", *self.lines])
        print("\n" + report)
        assert not self.failures, "\n".join(self.failures) + "\n\n" + report
