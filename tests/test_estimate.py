"""``ggufpack estimate`` without loading llama.cpp: inputs, settings precedence, layer placement, bad input.

Accuracy against llama.cpp's own allocations is in ``test_estimate_accuracy.py``.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from gguf.constants import GGUF_MAGIC

from ggufpack.cli import main
from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.estimate import estimate, options_from_cmd, resolve
from ggufpack.estimate.inputs import from_config, from_file
from ggufpack.estimate.model import HOST, place_layers
from ggufpack.gguf_info import model_config_entry, read_gguf
from tests.helpers.ggufmaker import N_EMBD, N_HEAD, N_VOCAB, make_gguf

MIB = 1 << 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gguf(tmp_path_factory.mktemp("est") / "tiny.gguf", n_layers=4)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_components_add_up_and_follow_the_rules(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["estimate", str(tiny), "-c", "1000", "-np", "2", "-ngl", "0", "-fa", "off", "--json",
                         "--runtime", "llama-server", "--gpus", "1"], capsys)
    assert code == 0
    row = json.loads(out)["estimates"][0]
    ram = row["ram"]
    assert ram["total"] == ram["weights"] + ram["kv"] + ram["compute"] + ram["output"]
    # n_ctx 1000 → 1024 (padded to 256), 2 separate slots of 512 cells, f16 K and V of 4 heads x 16 dims
    assert row["context_size"] == 1024
    assert ram["kv"] == 4 * 2 * (N_EMBD * 2) * 512 * 2
    assert ram["output"] == 4 * 2 * N_VOCAB
    assert ram["weights"] == sum(t.n_bytes for h in read_gguf(tiny) for t in h.tensors)
    # without flash attention the KQ scores of one micro-batch (512 tokens over 512 cells) are in there
    assert ram["compute"] > 4 * 512 * 512 * N_HEAD
    assert row["vram"][0]["total"] == 0


def test_gpu_layers_step_sweeps_to_full_offload(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["estimate", str(tiny), "--gpu-layers-step", "2", "--json", "--gpus", "1"], capsys)
    rows = json.loads(out)["estimates"]
    assert code == 0
    assert [r["offload_layers"] for r in rows] == [0, 2, 4, 5]
    assert [r["full_offloaded"] for r in rows] == [False, False, False, True]
    full = rows[-1]
    assert full["ram"]["weights"] == N_EMBD * N_VOCAB * 2  # only the token embeddings stay on the host
    assert full["ram"]["kv"] == 0 and full["vram"][0]["kv"] == rows[0]["ram"]["kv"]
    code, out, _ = _run(["estimate", str(tiny), "--gpu-layers-step", "2", "--gpus", "1"], capsys)
    assert "FULL OFFLOADED" in out and "VRAM 0 NONUMA" in out and "MiB" in out and len(out.splitlines()) == 5


def test_layer_placement_is_llama_cpps() -> None:
    # 4 blocks + output; -ngl 2: block 3 and the output layer go to the GPU
    assert place_layers(4, 2, ()).devices == [HOST, HOST, HOST, 0, 0]
    assert place_layers(4, 0, ()).devices == [HOST] * 5
    # -ngl 3 over two GPUs 1:1 → split points 0.5, 1.0 over the 3 offloaded layers
    assert place_layers(4, 3, (1.0, 1.0)).devices == [HOST, HOST, 0, 0, 1]


def test_split_set_reads_like_the_whole(tmp_path: Path) -> None:
    whole = make_gguf(tmp_path / "whole.gguf", n_layers=4)
    shard = make_gguf(tmp_path / "m.gguf", n_layers=4, split_max_tensors=10)
    assert len(read_gguf(shard)) > 1
    options = resolve([], {"ctx_size": 512})
    a = estimate(from_file(whole), options)[0].to_json()
    b = estimate(from_file(shard.with_name(shard.name.replace("00001-of", "00002-of"))), options)[0].to_json()
    assert a == b


def test_cmd_gives_defaults_and_only_given_flags_override(tiny: Path) -> None:
    cmd = ["-m", "/m.gguf", "-c", "8192", "-ub", "256", "-np", "2", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on",
           "--no-mmap", "-ngl", "10"]
    assert options_from_cmd(cmd)["cache_type_v"] == "q8_0"
    entry = model_config_entry(read_gguf(tiny), cmd_value="/m.gguf", cmd_index=1)
    inputs = from_config({"config": {"Cmd": cmd, "Model": entry}}, "img")
    options = resolve(inputs.cmd, {})
    assert (options.ctx_size, options.ubatch_size, options.parallel, options.mmap, options.gpu_layers) == (
        8192, 256, 2, False, 10)
    assert options.batch_size == 2048  # not in CMD: llama-server's default
    user = resolve(inputs.cmd, {"ctx_size": 1024})
    assert user.ctx_size == 1024 and user.cache_type_k == "q8_0"  # the rest of CMD still holds
    row = estimate(inputs, options)[0].to_json()
    assert row["context_size"] == 8192 and row["flash_attention"] and not row["mmap"]


def test_drafter_adds_up_on_its_own_layers(tiny: Path, tmp_path: Path) -> None:
    draft = make_gguf(tmp_path / "draft.gguf", n_layers=2)
    main_entry = model_config_entry(read_gguf(tiny), cmd_value="/m.gguf", cmd_index=1)
    draft_entry = model_config_entry(read_gguf(draft), cmd_value="/d.gguf", cmd_index=3)
    options = resolve([], {"ctx_size": 512, "gpu_layers": 0})
    alone = estimate(from_config({"config": {"Model": main_entry}}, "a"), options)[0].devices.host
    draft_alone = estimate(from_file(draft), options)[0].devices.host
    both = estimate(from_config({"config": {"Model": main_entry, "Drafter": draft_entry}}, "b"), options)[0]
    # -ngld is not given: llama-server offloads the whole drafter but its token embeddings
    assert both.devices.host.weights == alone.weights + N_EMBD * N_VOCAB * 2
    assert both.devices.gpus[0].weights == draft_alone.weights - N_EMBD * N_VOCAB * 2
    cpu = estimate(from_config({"config": {"Model": main_entry, "Drafter": draft_entry}}, "b"),
                   resolve(["-ngld", "0"], {"ctx_size": 512, "gpu_layers": 0}))[0]
    assert cpu.devices.host.weights == alone.weights + draft_alone.weights
    assert cpu.devices.host.kv == alone.kv + draft_alone.kv


def test_quantized_v_cache_needs_flash_attention() -> None:
    with pytest.raises(UsageError, match="flash attention"):
        resolve(["-ctv", "q8_0", "-fa", "off"], {})
    with pytest.raises(UsageError, match="choose one of"):
        resolve([], {"cache_type_k": "q7_9"})


@pytest.mark.parametrize(("split", "message"), [
    ("inf,1", "must be finite"), ("nan", "must be finite"), ("0,0", "not all 0"), (",".join(["1"] * 16), "at most 15"),
])
def test_tensor_split_from_cmd_is_checked(split: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve(["-ts", split], {})
    assert len(resolve(["-ts", ",".join(["1"] * 15)], {}).tensor_split) == 15


def test_config_without_model_is_a_clear_error() -> None:
    with pytest.raises(GGUFPackError, match="names no model"):
        from_config({"config": {"Cmd": []}}, "img")


# --- bad input: a clear error and exit 1, never a traceback or a hang --------------------------------


def _header(*kvs: tuple[str, int, bytes]) -> bytes:
    out = struct.pack("<IIQQ", GGUF_MAGIC, 3, 0, len(kvs))
    for key, vtype, value in kvs:
        out += struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", vtype) + value
    return out


def _string(s: str) -> bytes:
    return struct.pack("<Q", len(s)) + s.encode()


BAD_INPUTS = {
    "truncated": lambda p, tiny: p.write_bytes(tiny.read_bytes()[:300]),
    "not-gguf": lambda p, tiny: p.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10),
    "huge-string": lambda p, tiny: p.write_bytes(
        _header(("general.architecture", 8, struct.pack("<Q", 1 << 62) + b"llama"))),
    "absurd-layers": lambda p, tiny: make_gguf(p, extra_kv={"llama.block_count": (1 << 40, 10)}),
    "unknown-arch": lambda p, tiny: p.write_bytes(_header(("general.architecture", 8, _string("warpdrive")))),
    "absurd-dims": lambda p, tiny: make_gguf(p, extra_kv={"llama.embedding_length": (1 << 62, 10)}),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_error(case: str, tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.gguf"
    BAD_INPUTS[case](path, tiny)
    proc = subprocess.run([sys.executable, "-m", "ggufpack.cli", "estimate", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_missing_file_and_unknown_image(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGUFPACK_HOME", str(tmp_path / "store"))
    code, _, err = _run(["estimate", str(tmp_path / "nope.gguf")], capsys)
    assert code == 1 and "no such GGUF file" in err
    code, _, err = _run(["estimate", "no-such-image:latest"], capsys)
    assert code in (1, 2) and err.startswith("error: ")


def test_format_json_as_elsewhere_and_json_as_its_alias(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--format json`` as ``list``, ``inspect`` and ``ps`` spell it; ``--json`` stays as an alias."""
    code, by_format, _ = _run(["estimate", str(tiny), "--format", "json"], capsys)
    assert code == 0 and json.loads(by_format)["estimates"]
    assert _run(["estimate", str(tiny), "--json"], capsys)[1] == by_format
    code, text, _ = _run(["estimate", str(tiny), "--format", "table"], capsys)
    assert code == 0 and "MiB" in text
    assert _run(["estimate", str(tiny), "--format", "yaml"], capsys)[0] == 2
