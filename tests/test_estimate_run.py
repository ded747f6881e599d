"""``ggufpack estimate`` with no flags predicts what ``ggufpack run`` allocates here, measured.

Small models of three shapes (Llama; Gemma 3 with sliding-window layers; a BERT embedding encoder), two
narrow Llamas (``n_ff`` no wider than ``n_embd`` and twice it: ggml's allocator puts feed-forward tensors in
the holes the attention left) and the offline quickstart sample (``n_embd`` 64, ``n_ff`` 128) are
made with transformers, converted by ggufpack, built into images and served by ``ggufpack run`` with
no runtime flag; the buffers llama.cpp logs in the server's output (model, KV cache, output and
compute buffers) are compared with ``ggufpack estimate REF --json``, also with no flag: each
component and the total within 5% (a component also within the 0.01 MiB the log rounds to). Then
the same with ``--runtime llama-server`` on both sides, against a real llama-server (the CPU build
of the backend tests, run with ``-lv 4`` so that it logs its buffers). Run with ``-s`` to see the
figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .helpers.builds import do_build, open_store, run_cli
from .helpers.serving import served
from .helpers.tiny_estimate import COMPONENTS, MIB, SMALL_LLAMA, Comparison, parse_buffers, small_gguf
from .helpers.tiny_run import build_image

pytest.importorskip("uvicorn", reason="llama-cpp-python's server extra is not installed")

SMALL_GEMMA3 = {"vocab_size": 4096, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "sliding_window": 128,
                "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]}
SMALL_BERT = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024,
              "max_position_embeddings": 512}
#: narrow Llamas: n_ff equal to n_embd, and n_ff twice n_embd with a 4096-token training context (no -c)
NARROW_LLAMAS = {
    "narrow-square": {"hidden_size": 128, "intermediate_size": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_key_value_heads": 2},
    "narrow-double": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096},
}
QUICKSTART = Path(__file__).resolve().parent.parent / "Packerfile.samples" / "quickstart"
#: the log prints MiB with two decimals
LOG_ROUNDING = 0.01 * MIB


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .helpers.tiny_gemma import make_tiny_gemma
    from .helpers.tiny_gpt2_bert import make_tiny_bert
    from .helpers.tinymodels import make_tiny_llama

    root = tmp_path_factory.mktemp("estimate-run")
    store = open_store(root / "home")
    models = {
        "llama": (small_gguf(make_tiny_llama, root, "llama", vocab_size=8192, config=SMALL_LLAMA), []),
        "gemma3": (small_gguf(make_tiny_gemma, root, "gemma3", model_type="gemma3_text", config=SMALL_GEMMA3), []),
        "bert": (small_gguf(make_tiny_bert, root, "bert", config=SMALL_BERT), ["--embedding"]),
    }
    for name, config in NARROW_LLAMAS.items():
        models[name] = (small_gguf(make_tiny_llama, root, name, config=config), [])
    for name, (gguf, extra) in models.items():
        cmd = json.dumps(["-m", "/models/m.gguf", *extra, "-t", "1"])
        build_image(store, root, gguf, f"FROM scratch\nCOPY tiny.gguf /models/m.gguf\nCMD {cmd}\n", f"{name}:1")
    do_build(store, QUICKSTART, tags=("quickstart:1",))
    return root / "home"


def _comparison() -> Comparison:
    """Each component within 5% (or the 0.01 MiB the log rounds to), the total within 5%."""
    return Comparison("logged", share=0.05, floor=LOG_ROUNDING, total_share=0.05)


def _estimated(home: Path, ref: str, *args: str) -> tuple[str, dict[str, int]]:
    result = run_cli(["estimate", ref, "--json", *args], home)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    row = data["estimates"][0]
    assert row["vram"] == [], "a CPU build of llama.cpp puts every layer on the host"
    return data["runtime"], {c: row["ram"][c] for c in COMPONENTS}


def test_estimate_is_what_run_allocates(home: Path) -> None:
    comparison = _comparison()
    for name in ("llama", "gemma3", "bert", *NARROW_LLAMAS, "quickstart"):
        runtime, estimated = _estimated(home, f"{name}:1")
        with served(home, f"{name}:1") as server:
            assert server.runtime == runtime == "llama-cpp-python"
            comparison.add(f"{name} ({runtime})", estimated, parse_buffers(server.log_text()))
    comparison.check()


def test_estimate_for_llama_server_is_what_it_allocates(home: Path, tmp_path: Path) -> None:
    from .helpers.llamacpp_build import build_available, install_into

    if not build_available():
        pytest.skip("no llama.cpp CPU build cached and no local sources to build one")
    with_backend = tmp_path / "home"
    shutil.copytree(home, with_backend, symlinks=True, ignore=shutil.ignore_patterns("state"))
    install_into(with_backend)
    comparison = _comparison()
    for name in ("llama", "gemma3", "bert", *NARROW_LLAMAS, "quickstart"):
        runtime, estimated = _estimated(with_backend, f"{name}:1", "--runtime", "llama-server")
        assert runtime == "llama-server"
        with served(with_backend, f"{name}:1", "--runtime", "llama-server", "--", "-lv", "4") as server:
            comparison.add(f"{name} (llama-server)", estimated, parse_buffers(server.log_text()))
    comparison.check()
