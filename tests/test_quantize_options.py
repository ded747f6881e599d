"""Each llama-quantize knob, in-process: it changes exactly the tensors (or keys) it should.

The baseline is Q4_K_M of the tiny llama; every other run differs from it only where the knob says.
Tensor types are read back from the GGUF headers. Bad option syntax is a UsageError before any work.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.options.quantize import QuantizeOptions, parse_override_kv, parse_tensor_type
from ggufpack.quantize.api import quantize_model
from ggufpack.quantize.imatrix_file import load_imatrix, quantize_weights
from ggufpack.quantize.tool import quantize_args, run_tool
from tests.helpers.tiny_quant import built_tool_backend, read_gguf_header, tensor_type_names, tiny_f16, tiny_imatrix


def _types(tmp_path: Path, name: str, **options: object) -> dict[str, str]:
    (out,) = quantize_model(tiny_f16(), tmp_path / f"{name}.gguf", QuantizeOptions(threads=2, **options))
    return tensor_type_names(out)


def _changed(base: dict[str, str], other: dict[str, str]) -> dict[str, str]:
    assert base.keys() == other.keys()
    return {name: other[name] for name in base if base[name] != other[name]}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _types(tmp_path_factory.mktemp("base"), "base", type="Q4_K_M")


def test_pure_makes_every_weight_the_default_type(tmp_path: Path, baseline: dict[str, str]) -> None:
    changed = _changed(baseline, _types(tmp_path, "pure", type="Q4_K_M", pure=True))
    assert changed and set(changed.values()) == {"Q4_K"}
    assert {baseline[n] for n in changed} == {"Q6_K"}  # the mix's extra bits (output, attn_v, ffn_down) are gone


def test_output_and_embedding_knobs_touch_only_their_tensor(tmp_path: Path, baseline: dict[str, str]) -> None:
    assert _changed(baseline, _types(tmp_path, "leave", type="Q4_K_M", leave_output_tensor=True)) == {
        "output.weight": "F16"}
    assert _changed(baseline, _types(tmp_path, "out", type="Q4_K_M", output_tensor_type="Q8_0")) == {
        "output.weight": "Q8_0"}
    assert _changed(baseline, _types(tmp_path, "emb", type="Q4_K_M", token_embedding_type="q5_0")) == {
        "token_embd.weight": "Q5_0"}


def test_tensor_type_patterns_are_regexes_first_match_wins(tmp_path: Path, baseline: dict[str, str]) -> None:
    changed = _changed(baseline, _types(tmp_path, "tt", type="Q4_K_M", tensor_types=(
        ("attn_v", "Q8_0"), (r"BLK\.1\.ffn_(up|gate)", "Q5_0"), ("ffn_up", "IQ4_NL"))))
    assert changed == {"blk.0.attn_v.weight": "Q8_0", "blk.1.attn_v.weight": "Q8_0",
                       "blk.1.ffn_up.weight": "Q5_0", "blk.1.ffn_gate.weight": "Q5_0",
                       "blk.0.ffn_up.weight": "IQ4_NL"}  # patterns are lower-cased, as the tool does


def test_override_kv_values_appear(tmp_path: Path) -> None:
    (out,) = quantize_model(tiny_f16(), tmp_path / "kv.gguf", QuantizeOptions(type="Q8_0", threads=2, override_kv=(
        "general.name=str:renamed", "ggufpack.test.count=int:42", "ggufpack.test.scale=float:0.5",
        "ggufpack.test.flag=bool:true", "ggufpack.test.negative=int:-3")))
    metadata, _ = read_gguf_header(out)
    assert metadata["general.name"] == "renamed"
    assert metadata["ggufpack.test.count"] == 42 and metadata["ggufpack.test.scale"] == 0.5
    assert metadata["ggufpack.test.flag"] is True
    assert metadata["ggufpack.test.negative"] == 3  # llama.cpp writes int overrides as u32 of |value|


def test_imatrix_include_exclude_filter_entries(tmp_path: Path) -> None:
    imatrix = tiny_imatrix()
    all_entries = len(load_imatrix(imatrix).entries)

    def quantize_keys(**options: object) -> dict[str, object]:
        (out,) = quantize_model(tiny_f16(), tmp_path / "im.gguf", QuantizeOptions(
            type="Q4_K_M", threads=2, imatrix=imatrix, imatrix_name="calib/tiny.imatrix", **options))
        return {k: v for k, v in read_gguf_header(out)[0].items() if k.startswith("quantize.imatrix")}

    keys = quantize_keys()
    assert keys["quantize.imatrix.file"] == "calib/tiny.imatrix"
    assert keys["quantize.imatrix.entries_count"] == all_entries == 14
    assert keys["quantize.imatrix.chunks_count"] == 4
    assert quantize_keys(exclude_weights=("ffn",))["quantize.imatrix.entries_count"] == all_entries - 6
    assert quantize_keys(include_weights=("attn_q", "attn_k"))["quantize.imatrix.entries_count"] == 4
    assert quantize_keys(include_weights=("no-such-tensor",)) == {}  # nothing left: no imatrix at all


def test_legacy_dat_imatrix_reads_like_the_gguf_one(tmp_path: Path) -> None:
    gguf_im = load_imatrix(tiny_imatrix())
    chunk = gguf_im.chunk_size
    dat = bytearray(struct.pack("<i", len(gguf_im.entries)))
    for name, entry in sorted(gguf_im.entries.items()):
        ncall = int(-(-entry.counts.max() // chunk))
        values = (entry.sums / entry.counts.astype(np.float32)[:, None] * np.float32(ncall)).astype("<f4").ravel()
        dat += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", ncall, values.size) + values.tobytes()
    dat += struct.pack("<i", gguf_im.chunk_count) + struct.pack("<i", 9) + b"calib.txt"
    path = tmp_path / "legacy.dat"
    path.write_bytes(bytes(dat))
    legacy = load_imatrix(path)
    assert legacy.is_legacy and legacy.datasets == ["calib.txt"] and legacy.chunk_count == gguf_im.chunk_count
    a, b = quantize_weights(gguf_im), quantize_weights(legacy)
    assert a.keys() == b.keys()
    assert max(float(np.max(np.abs(a[k] - b[k]) / a[k])) for k in a) < 1e-6
    (out,) = quantize_model(tiny_f16(), tmp_path / "q.gguf", QuantizeOptions(type="IQ2_XXS", threads=2, imatrix=path))
    assert read_gguf_header(out)[0]["quantize.imatrix.dataset"] == "calib.txt"


def test_allow_requantize(tmp_path: Path) -> None:
    (q8,) = quantize_model(tiny_f16(), tmp_path / "q8.gguf", QuantizeOptions(type="Q8_0", threads=2))
    with pytest.raises(GGUFPackError, match="could not quantize"):
        quantize_model(q8, tmp_path / "q4.gguf", QuantizeOptions(type="Q4_0", threads=2))
    assert not (tmp_path / "q4.gguf").exists()
    (q4,) = quantize_model(q8, tmp_path / "q4.gguf", QuantizeOptions(type="Q4_0", threads=2, allow_requantize=True))
    assert "Q4_0" in tensor_type_names(q4).values()


def test_keep_split_names_shards_like_the_tool(tmp_path: Path) -> None:
    written = quantize_model(tiny_f16(), tmp_path / "split.gguf", QuantizeOptions(type="Q8_0", threads=2,
                                                                                 keep_split=True))
    assert [p.name for p in written] == ["split-00001-of-00001.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split-00001-of-00001.gguf"]
    # glob characters in the name are part of it, not a pattern
    written = quantize_model(tiny_f16(), tmp_path / "a[1].gguf", QuantizeOptions(type="Q8_0", threads=2,
                                                                               keep_split=True))
    assert [p.name for p in written] == ["a[1]-00001-of-00001.gguf"]


def test_output_that_cannot_be_a_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ggufpack.cli import main

    (tmp_path / "outdir").mkdir()
    (tmp_path / "plain").write_text("x")
    for dest, message in ((tmp_path / "outdir", "is a directory"), (tmp_path / "plain" / "q.gguf", "cannot write")):
        assert main(["quantize", str(tiny_f16()), str(dest), "Q8_0", "-q"]) == 1
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir", "plain"]
    assert list((tmp_path / "outdir").iterdir()) == []


@pytest.mark.parametrize("options, message", [
    ({"type": "Q9_K"}, "not a llama.cpp quantization type"),
    ({"tensor_types": (("attn_v", "Q9"),)}, "write PATTERN=TYPE"),
    ({"tensor_types": (("attn_v", "I32"),)}, "write PATTERN=TYPE"),
    ({"tensor_types": (("attn_(v", "Q8_0"),)}, "not a regular expression"),
    ({"output_tensor_type": "q8_1"}, "not a ggml tensor type"),
    ({"override_kv": ("general.name",)}, "write KEY=TYPE:VALUE"),
    ({"override_kv": ("a=int:x",)}, "int needs an integer"),
    ({"override_kv": ("a=bool:yes",)}, "bool needs true or false"),
    ({"override_kv": ("a=list:1",)}, "write KEY=TYPE:VALUE"),
    ({"override_kv": ("a=str:" + "x" * 128,)}, "at most 127 bytes"),
    ({"override_kv": ("k" * 128 + "=int:1",)}, "longer than 127 bytes"),
    ({"include_weights": ("a",), "exclude_weights": ("b",)}, "cannot be used together"),
    ({"include_weights": ("a",)}, "give --imatrix too"),
    ({"threads": -1}, "--threads"),
])
def test_bad_options_are_usage_errors(tmp_path: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        quantize_model(tiny_f16(), tmp_path / "x.gguf", QuantizeOptions(**options))  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_parsers() -> None:
    assert parse_tensor_type("blk\\.0\\..*=Q6_k") == ("blk\\.0\\..*", "Q6_K")
    kv = parse_override_kv("tokenizer.ggml.add_bos_token=bool:false")
    assert (kv.key, kv.kind, kv.value) == ("tokenizer.ggml.add_bos_token", "bool", False)
    with pytest.raises(UsageError):
        parse_tensor_type("=q8_0")


def test_tool_arguments_are_a_list_with_every_flag(tmp_path: Path) -> None:
    imatrix = tmp_path / "im.gguf"
    imatrix.write_bytes(b"GGUF")
    args = quantize_args(Path("/opt/llama-quantize"), Path("/in.gguf"), Path("/out.gguf"), QuantizeOptions(
        type="q4_k", pure=True, allow_requantize=True, leave_output_tensor=True, keep_split=True,
        output_tensor_type="Q8_0", token_embedding_type="Q6_K", imatrix=imatrix, include_weights=("attn",),
        tensor_types=(("attn_v", "Q8_0"),), override_kv=("general.name=str:a b",), threads=3), "im.gguf")
    assert args == [
        "/opt/llama-quantize", "--allow-requantize", "--leave-output-tensor", "--pure", "--keep-split",
        "--imatrix", "im.gguf", "--include-weights", "attn", "--output-tensor-type", "q8_0",
        "--token-embedding-type", "q6_k", "--tensor-type", "attn_v=q8_0", "--override-kv", "general.name=str:a b",
        "/in.gguf", "/out.gguf", "Q4_K_M", "3",
    ]


def test_in_process_and_tool_give_identical_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = built_tool_backend("quantize", monkeypatch)
    options = QuantizeOptions(type="Q4_K_M", threads=2, imatrix=tiny_imatrix(), imatrix_name="tiny.imatrix",
                              tensor_types=(("attn_v", "Q8_0"),), override_kv=("general.name=str:same",))
    (ours,) = quantize_model(tiny_f16(), tmp_path / "ours.gguf", options)
    (theirs,) = quantize_model(tiny_f16(), tmp_path / "theirs.gguf", options, backend=backend.name)
    assert ours.read_bytes() == theirs.read_bytes()


def test_tool_finds_an_imatrix_named_relative_to_the_current_directory(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tool runs in a private directory: a ``../`` path given on the command line must still reach the file."""
    backend = built_tool_backend("quantize", monkeypatch)
    (tmp_path / "im.gguf").write_bytes(tiny_imatrix().read_bytes())
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    (out,) = quantize_model(tiny_f16(), Path("out.gguf"), QuantizeOptions(type="Q4_K_M", threads=2,
                                                                          imatrix=Path("../im.gguf")),
                            backend=backend.name)
    assert read_gguf_header(out)[0]["quantize.imatrix.file"] == str(tmp_path / "im.gguf")


def test_an_interrupted_tool_is_killed(tmp_path: Path) -> None:
    """Interrupted while a tool runs (a signal to ggufpack alone), the tool does not live on."""
    import signal
    import threading
    import time

    pid_file = tmp_path / "pid"

    def interrupt() -> None:
        while not pid_file.exists() or not pid_file.read_text().strip():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_tool(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"], cwd=tmp_path, what="sleep")
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # killed and reaped


def test_numpy_backend_gives_the_in_process_bytes(tmp_path: Path) -> None:
    options = QuantizeOptions(type="Q8_0", threads=2, output_tensor_type="q8_0")
    (ours,) = quantize_model(tiny_f16(), tmp_path / "ours.gguf", options)
    (numpy_out,) = quantize_model(tiny_f16(), tmp_path / "numpy.gguf", options, backend="numpy")
    assert ours.read_bytes() == numpy_out.read_bytes()
    with pytest.raises(UsageError, match="numpy backend does not support --imatrix"):
        quantize_model(tiny_f16(), tmp_path / "x.gguf", QuantizeOptions(type="Q8_0", imatrix=tiny_imatrix()),
                       backend="numpy")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ggufpack.cli import main

    assert main(["quantize", "--list-types"]) == 0
    table = capsys.readouterr().out
    assert "Q5_K_M" in table and "default" in table and "needs --imatrix" in table
    out = tmp_path / "cli.gguf"
    assert main(["quantize", str(tiny_f16()), str(out), "q4_k", "--tensor-type", "attn_v=q8_0", "--threads", "2",
                 "--override-kv", "general.name=str:cli", "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert tensor_type_names(out)["blk.0.attn_v.weight"] == "Q8_0"
    assert read_gguf_header(out)[0]["general.name"] == "cli"
    assert main(["quantize", str(tiny_f16()), str(tmp_path / "bad.gguf"), "--override-kv", "x=int:y"]) == 2
    assert main(["quantize", str(tiny_f16()), str(tmp_path / "bad.gguf"), "IQ1_S"]) == 2
    assert "IQ1_S needs an importance matrix" in capsys.readouterr().err
    assert not (tmp_path / "bad.gguf").exists()
