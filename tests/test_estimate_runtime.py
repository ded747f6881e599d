"""The estimate's defaults are those of the runtime ``run`` would use here: its slots, output limit and
batch rule, and the GPUs it can use (none: no VRAM columns). No llama.cpp is loaded; the measured
comparison with both runtimes is ``test_estimate_run.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ggufpack.cli import main
from ggufpack.errors import UsageError
from ggufpack.estimate import estimate, options_from_cmd, resolve
from ggufpack.estimate.inputs import from_file
from ggufpack.estimate.machine import runtime_for, runtime_gpus
from ggufpack.estimate.render import table
from tests.helpers.ggufmaker import make_gguf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gguf(tmp_path_factory.mktemp("est-runtime") / "tiny.gguf", n_layers=4)


def test_each_runtime_s_slots_and_outputs() -> None:
    server = resolve([], {})
    assert (server.n_seq, server.unified, server.outputs_max) == (4, True, 0)  # no runtime: the C API's view
    server = resolve([], {}, runtime="llama-server")
    assert (server.n_seq, server.unified, server.outputs_max) == (4, True, 4)  # one output per slot
    assert resolve(["-np", "2"], {}, runtime="llama-server").outputs_max == 2
    assert resolve([], {}, runtime="llama-server", drafter=True).outputs_max == 4 * (1 + 3)  # --spec-draft-n-max 3
    assert resolve(["--spec-draft-n-max", "5"], {}, runtime="llama-server", drafter=True).outputs_max == 4 * 6
    lcpp = resolve([], {}, runtime="llama-cpp-python")
    assert (lcpp.n_seq, lcpp.unified, lcpp.outputs_max, lcpp.batch_size) == (1, False, 1, 2048)
    for runtime in ("llama-server", "llama-cpp-python"):  # embeddings: every token out, the batch one micro-batch
        embed = resolve(["--embedding"], {"ubatch_size": 256}, runtime=runtime)
        assert (embed.n_seq, embed.unified, embed.outputs_max, embed.batch_size) == (4, True, 0, 256)
    assert resolve(["--pooling", "mean"], {}, runtime="llama-server").outputs_max == 0
    with pytest.raises(UsageError, match="answers one request at a time"):
        resolve(["-np", "2"], {}, runtime="llama-cpp-python")


def test_one_slot_shrinks_the_sliding_window_cache_and_the_output_buffer(tiny: Path) -> None:
    inputs = from_file(tiny)
    server = estimate(inputs, resolve([], {"ctx_size": 512}, runtime="llama-server", gpus=0))[0]
    lcpp = estimate(inputs, resolve([], {"ctx_size": 512}, runtime="llama-cpp-python", gpus=0))[0]
    assert server.devices.host.output == 4 * lcpp.devices.host.output  # 4 slots' logits, 1 slot's
    assert server.devices.host.kv == lcpp.devices.host.kv  # a unified cache of n_ctx cells either way
    assert server.devices.host.compute >= lcpp.devices.host.compute


def test_no_gpu_keeps_every_layer_on_the_host_and_shows_no_vram(tiny: Path) -> None:
    rows = estimate(from_file(tiny), resolve(["-ngl", "99", "-ts", "1,1"], {}, runtime="llama-server", gpus=0))
    assert rows[0].devices.gpus == [] and rows[0].model.gpu_layers == 0 and rows[0].to_json()["vram"] == []
    head = table(rows).splitlines()[0].split("  ")
    assert "VRAM" not in table(rows) and "OFFLOAD LAYERS" not in head and head[-1].strip() == "RAM"
    one = estimate(from_file(tiny), resolve([], {}, runtime="llama-server", gpus=1))
    assert "VRAM 0 NONUMA" in table(one) and one[0].full_offload


def test_cli_defaults_are_this_machine_s(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(tiny), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runtime"] == runtime_for([], {}) == "llama-cpp-python"  # what `run` picks for a plain CMD
    assert len(data["estimates"][0]["vram"]) == runtime_gpus("llama-cpp-python")
    assert data["estimates"][0]["parallel"] == 1
    assert main(["estimate", str(tiny), "--runtime", "llama-server", "--gpus", "0"]) == 0
    out, err = capsys.readouterr()
    assert "VRAM" not in out and err.strip() == "(for llama-server, no GPU: every layer in RAM)"


def test_a_cmd_the_default_runtime_cannot_serve_is_estimated_for_llama_server(monkeypatch: pytest.MonkeyPatch,
                                                                                tmp_path: Path) -> None:
    monkeypatch.setenv("GGUFPACK_HOME", str(tmp_path / "home"))  # no backend installed
    monkeypatch.setenv("PATH", "/nonexistent")  # none sideloaded either
    assert runtime_for(["-m", "/m.gguf", "-np", "2"], {}) == "llama-server"
    assert runtime_for(["-m", "/m.gguf"], {"parallel": 2}) == "llama-server"  # the settings given count too
    assert runtime_for(["-m", "/m.gguf", "--embedding"], {"parallel": 8}) == "llama-cpp-python"
    assert runtime_for(["-m", "/m.gguf", "-sysf", "/s.txt", "--temp", "0.2"], {}) == "llama-cpp-python"


def test_cmd_is_read_with_llama_server_s_own_spellings() -> None:
    assert options_from_cmd(["--ctx_size", "1024", "-np", "-1", "--load-mode", "none", "-no-kvu", "--no-kv-offload",
                             "-ngld", "3", "--spec-draft-n-max", "5", "--pooling", "CLS", "-fa", "-1"]) == {
        "ctx_size": 1024, "parallel": 0, "mmap": False, "kv_unified": False, "kv_offload": False,
        "gpu_layers_draft": 3, "draft_max": 5, "pooling": "cls", "flash_attn": "auto"}
    # older llama.cpp (gguf-packer's images): --no-mmap, -fa without a value
    assert options_from_cmd(["--no-mmap", "-fa", "-c", "512"]) == {"mmap": False, "flash_attn": "on", "ctx_size": 512}
