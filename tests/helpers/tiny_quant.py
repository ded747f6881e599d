"""A tiny llama whose rows fit every quantization block (256), converted to F16 once per test run.

``make_tiny_llama``'s default hidden size (64) is below the 256-value blocks of K-quants and most IQ
types, which would make llama.cpp fall back to other types for every tensor; hidden 256 / ff 512 keeps
the model tiny (about 2 MB in F16) while every tensor can take every type. Also here: a minimal GGUF
header reader for tensor types (``gguf.GGUFReader`` of the installed ``gguf`` release does not know
the newest ggml types such as Q2_0, so it cannot open every file the sweep makes).
"""

from __future__ import annotations

import atexit
import shutil
import struct
import tempfile
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from .tinymodels import make_tiny_llama

CONFIG = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2}

#: calibration text: varied enough to produce a few hundred tokens of several kinds
CALIBRATION = "".join(
    f"Line {i}: the quick brown fox {i * 7 % 13} jumps over {i * i} lazy dogs; "
    f"der schnelle braune Fuchs, le renard brun {i}, 敏捷的棕色狐狸 {i % 5}.\n"
    for i in range(60)
)


@cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ggufpack-tiny-quant-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@cache
def tiny_checkpoint() -> Path:
    return make_tiny_llama(_workdir() / "tiny-llama-256", config=CONFIG)


@cache
def tiny_f16() -> Path:
    """The tiny checkpoint converted by ggufpack to F16 (made once per process)."""
    from ggufpack.convert import convert

    out = _workdir() / "tiny-llama-256.F16.gguf"
    convert(tiny_checkpoint(), out, out_type="F16")
    return out


def calibration_file(directory: Path, text: str = CALIBRATION) -> Path:
    path = Path(directory) / "calibration.txt"
    path.write_text(text, encoding="utf-8")
    return path


# -- a minimal GGUF header reader ------------------------------------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _read(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def _string(f: BinaryIO) -> str:
    return f.read(_read(f, "<Q")).decode("utf-8")


def _value(f: BinaryIO, vtype: int) -> Any:
    if vtype == 8:
        return _string(f)
    if vtype == 9:
        item_type, n = _read(f, "<I"), _read(f, "<Q")
        return [_value(f, item_type) for _ in range(n)]
    return _read(f, _SCALARS[vtype])


def read_gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """(metadata, tensor name → raw ggml type id) of a GGUF file."""
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
        _read(f, "<I")
        n_tensors, n_kv = _read(f, "<Q"), _read(f, "<Q")
        metadata = {}
        for _ in range(n_kv):
            key = _string(f)
            metadata[key] = _value(f, _read(f, "<I"))
        types = {}
        for _ in range(n_tensors):
            name = _string(f)
            n_dims = _read(f, "<I")
            f.read(8 * n_dims)
            types[name] = _read(f, "<I")
            _read(f, "<Q")
    return metadata, types


def type_counts(path: Path) -> Counter[str]:
    """How many tensors of each ggml type (by name) a GGUF file holds."""
    from ggufpack.quantize import ggml

    names = ggml.type_names()
    return Counter(names[t] for t in read_gguf_header(path)[1].values())


def tensor_type_names(path: Path) -> dict[str, str]:
    from ggufpack.quantize import ggml

    names = ggml.type_names()
    return {name: names[t] for name, t in read_gguf_header(path)[1].items()}


def generate(path: Path, prompt: str = "The quick brown", n: int = 4) -> list[int]:
    """Load ``path`` in llama-cpp-python and greedily generate ``n`` tokens; returns their ids."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=64, n_threads=2, verbose=False, seed=0)
    try:
        tokens = llm.tokenize(prompt.encode())
        out = []
        for token in llm.generate(tokens, temp=0.0):
            out.append(token)
            if len(out) == n:
                break
        return out
    finally:
        llm.close()


@cache
def tiny_imatrix() -> Path:
    """An importance matrix of :func:`tiny_f16` made by our in-process IMATRIX (4 chunks of 64 tokens)."""
    from ggufpack.quantize.api import make_imatrix
    from ggufpack.quantize.imatrix import ImatrixOptions

    out = _workdir() / "tiny.imatrix.gguf"
    make_imatrix(tiny_f16(), calibration_file(_workdir()), out, ImatrixOptions(chunks=4, ctx_size=64, threads=2))
    return out


def built_tool_backend(capability: str, monkeypatch: pytest.MonkeyPatch, *, required: bool = True) -> Any:
    """The llama.cpp CPU tools built from the installed llama-cpp-python's sources (built once and cached
    across runs by :mod:`tests.helpers.llamacpp_build`), sideloaded for this test; the oracle of the
    tool comparisons. Without local sources to build from: a skip, or None when not ``required``."""
    from ggufpack.backends import resolve_backend
    from tests.helpers.llamacpp_build import build_available, built_cpu_dir

    if not required and not build_available():
        return None

    # what probing learns goes to a home of this test run, not to the user's
    monkeypatch.setenv("GGUFPACK_HOME", str(_workdir() / "home"))
    monkeypatch.setenv("GGUFPACK_BACKENDS_PATH", str(built_cpu_dir() / "bin"))
    backend = next((b for b in _sideloaded() if capability in b.capabilities), None)
    assert backend is not None, f"the built tools in {built_cpu_dir()} offer no {capability}"
    return resolve_backend(backend.name, capability)


def _sideloaded() -> list[Any]:
    from ggufpack.backends import list_backends

    return [b for b in list_backends() if b.kind == "sideloaded"]
