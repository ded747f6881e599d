"""A built ``llama.cpp-cpu`` backend: its metadata, meta-name resolution, and byte-identity with in-process.

The tools are compiled once by ``ggufpack backends install`` from the llama.cpp vendored in the
installed llama-cpp-python's sdist and cached across runs (``tests/helpers/llamacpp_build.py``): the
first run takes minutes, hence ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import llama_cpp
import pytest

from ggufpack import cli
from ggufpack.backends import list_backends, resolve_backend
from ggufpack.convert import convert
from tests.helpers import llamacpp_build
from tests.helpers.llamacpp_build import inprocess_quantize, tool_quantize
from tests.helpers.tinymodels import make_tiny_llama

pytestmark = pytest.mark.slow
Q = gguf.GGMLQuantizationType
TOOLS = {"llama-quantize", "llama-imatrix", "llama-server"}


@pytest.fixture(scope="module")
def built() -> Path:
    return llamacpp_build.built_cpu_dir()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GGUFPACK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GGUFPACK_BACKENDS_PATH", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Width 256 so that K-quant blocks fit every matrix; an untied head (Q6_K in the K mixes)."""
    root = tmp_path_factory.mktemp("built")
    hf = make_tiny_llama(root / "hf", seed=31, config={"hidden_size": 256, "intermediate_size": 512})
    return convert(hf, root / "m-f16.gguf").path


def test_metadata(built: Path):
    meta = json.loads((built / "metadata.json").read_text())
    assert meta["name"] == "llama.cpp-cpu" and meta["kind"] == "built" and meta["accelerator"] == "cpu"
    assert meta["version"] == f"llama-cpp-python-{llama_cpp.__version__}"
    assert set(meta["capabilities"]) == {"quantize", "imatrix", "server"}
    assert {"-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"} <= set(meta["build_flags"])
    assert meta["native"] is True and meta["llama_cpp"]["llama_cpp_python_sdist"] == llama_cpp.__version__
    assert {p.name for p in (built / "bin").iterdir()} == TOOLS
    assert not list(built.parent.glob(".install-*")) and not list(built.parent.glob(".build-*/"))  # cleaned up


def test_meta_name_resolves_to_the_built_variant(home: Path, built: Path, capsys: pytest.CaptureFixture[str]):
    llamacpp_build.install_into(home)
    backend = resolve_backend("llama.cpp", "server")  # no GPU build installed: the CPU one, whatever the machine
    assert backend.name == "llama.cpp-cpu" and backend.kind == "built"
    assert backend.tool("llama-server") == home / "backends" / "llama.cpp-cpu" / "bin" / "llama-server"
    assert "llama.cpp-cpu" in {b.name for b in list_backends()}
    assert cli.main(["backends", "remove", "llama.cpp"]) == 0  # the meta name removes its concrete backend
    assert "removed llama.cpp-cpu" in capsys.readouterr().out
    assert not (home / "backends" / "llama.cpp-cpu").exists()
    assert (built / "bin" / "llama-quantize").is_file()  # a linked-in build is unlinked, not deleted


@pytest.mark.parametrize(("qtype", "options"), [
    ("Q4_0", {}),
    ("Q8_0", {}),
    ("Q4_K_M", {}),
    ("Q3_K_S", {}),
    ("Q6_K", {}),
    ("IQ4_NL", {}),
    ("Q5_K_S", {"pure": True}),
    ("Q4_K_M", {"output_tensor_type": "Q8_0", "token_embedding_type": "F16"}),
])
def test_built_tool_and_in_process_give_the_same_bytes(built: Path, model: Path, tmp_path: Path, qtype: str,
                                                        options: dict):
    ours, tools = tmp_path / "in-process.gguf", tmp_path / "tool.gguf"
    inprocess_quantize(model, ours, qtype, **options)
    tool_quantize(built / "bin" / "llama-quantize", model, tools, qtype, **options)
    reader = gguf.GGUFReader(tools)
    assert reader.get_field("general.file_type").contents() == int(gguf.LlamaFileType[f"MOSTLY_{qtype}"])
    types = {Q(int(t.tensor_type)) for t in reader.tensors}
    assert types - {Q.F32, Q.F16}, "nothing was quantized"
    if qtype.startswith(("Q4_K", "Q3_K")) and not options:
        assert {Q.Q6_K} <= types  # the K mixes' head
    assert ours.read_bytes() == tools.read_bytes()
