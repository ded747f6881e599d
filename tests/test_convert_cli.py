"""``ggufpack convert`` through a real subprocess: what it prints, where it writes, how it fails."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import pytest

from ggufpack.convert import OUTPUT_TYPES

from .helpers.builds import CliResult, run_cli
from .helpers.tiny_lora import make_tiny_lora
from .helpers.tinymodels import make_tiny_llama


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("cli-base") / "tiny-base")


@pytest.fixture(scope="module")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lora(base, tmp_path_factory.mktemp("cli-lora") / "my-lora", target_modules=["q_proj", "v_proj"])


def convert_cli(cwd: Path, *args: str) -> CliResult:
    cwd.mkdir(parents=True, exist_ok=True)
    return run_cli(["convert", *args], cwd / ".home", cwd=cwd)


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != ".home")


def test_model_default_name_and_summary(base: Path, tmp_path: Path):
    result = convert_cli(tmp_path, str(base), "--outtype", "f32", "--progress", "plain")
    assert result.code == 0, result.err
    assert result.out == "tiny-base-F32.gguf\n"  # llama.cpp's naming: source name and type, in the cwd
    assert files(tmp_path) == ["tiny-base-F32.gguf"]
    assert "llama model (LlamaForCausalLM), F32, 21 tensors, " in result.err and "KiB" in result.err
    reader = gguf.GGUFReader(tmp_path / "tiny-base-F32.gguf")
    assert len(reader.tensors) == 21 and reader.fields["general.type"].contents() == "model"


def test_auto_is_named_after_the_resolved_type(base: Path, tmp_path: Path):
    result = convert_cli(tmp_path, str(base), "--outtype", "AUTO", "-q")
    assert (result.code, result.out, result.err) == (0, "tiny-base-F16.gguf\n", "")  # float32 weights: F16


def test_lora_with_outfile_quiet_and_name(base: Path, adapter: Path, tmp_path: Path):
    out = tmp_path / "sub" / "adapter.gguf"
    result = convert_cli(tmp_path, str(adapter), "--class", "lora", "--base", str(base), "--outfile", str(out),
                         "--model-name", "My LoRA", "-q")
    assert (result.code, result.out, result.err) == (0, f"{out}\n", "")
    value = {k: f.contents() for k, f in gguf.GGUFReader(out).fields.items() if not k.startswith("GGUF.")}
    assert value["general.type"] == "adapter" and value["adapter.type"] == "lora" and value["general.name"] == "My LoRA"


def test_split_prints_every_shard(base: Path, tmp_path: Path):
    result = convert_cli(tmp_path, str(base), "--outtype", "F32", "--outfile", "m.gguf", "--split-max-size", "200K",
                         "-q")
    assert result.code == 0, result.err
    shards = result.out.splitlines()
    assert len(shards) > 1 and shards == sorted(files(tmp_path)) and shards[0].endswith(f"-of-{len(shards):05d}.gguf")
    assert all((tmp_path / s).stat().st_size < 300_000 for s in shards)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["{base}", "--outtype", "Q4_K_M"], 2,
         f"--outtype 'Q4_K_M' is not a conversion type: choose one of {', '.join(OUTPUT_TYPES)}"),
        (["{adapter}", "--class", "lora"], 2, "--class lora needs --base DIR"),
        (["{base}", "--base", "{base}"], 2, "--base only applies to --class lora"),
        (["{base}", "--split-max-size", "2GB"], 2, "--split-max-size '2GB': write a number"),
        (["{base}", "--class", "vision"], 2, "invalid choice: 'vision'"),
        (["{missing}"], 1, "not a directory"),
        (["{adapter}", "--class", "lora", "--base", "{adapter}"], 1, "no config.json"),
        (["{pickled}", "--class", "lora", "--base", "{base}"], 1, "can execute code"),
        (["{adapter}", "--class", "lora", "--base", "{base}", "--outtype", "TQ1_0"], 1, "cannot be stored as TQ1_0"),
    ],
    ids=["bad-type", "lora-without-base", "base-without-lora", "bad-size", "bad-class", "missing-source",
         "base-is-not-a-model", "pickled-adapter", "ternary-adapter"],
)
def test_errors_exit_codes_and_no_partial_files(base: Path, adapter: Path, tmp_path: Path, args: list[str],
                                                code: int, message: str):
    pickled = tmp_path / "inputs" / "pickled"
    shutil.copytree(adapter, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    (pickled / "adapter_model.bin").write_bytes(b"never unpickled")
    paths = {"base": base, "adapter": adapter, "missing": tmp_path / "nope", "pickled": pickled}
    cwd = tmp_path / "cwd"
    result = convert_cli(cwd, *(a.format(**paths) for a in args))
    assert result.code == code, result.err
    assert message in result.err and result.err.startswith("error: ")
    assert "Traceback" not in result.err and result.out == ""
    assert files(cwd) == []


def test_unwritable_output_is_a_clear_error(base: Path, tmp_path: Path):
    cwd = tmp_path / "cwd"
    (cwd / "out.gguf").mkdir(parents=True)
    (cwd / "file").write_text("not a directory")
    for outfile, message in [("out.gguf", "out.gguf is a directory"), ("file/m.gguf", "cannot write file/m.gguf")]:
        result = convert_cli(cwd, str(base), "--outfile", outfile)
        assert result.code == 1 and message in result.err, result.err
        assert "Traceback" not in result.err and result.out == ""
    assert files(cwd) == ["file", "out.gguf"] and list((cwd / "out.gguf").iterdir()) == []


def test_debug_shows_the_traceback(tmp_path: Path):
    result = run_cli(["--debug", "convert", str(tmp_path / "nope")], tmp_path / ".home", cwd=tmp_path)
    assert result.code == 1 and "Traceback" in result.err and "not a directory" in result.err


def test_a_staged_source_is_named_as_the_caller_names_it(base: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The build stages a CONVERT source in a scratch directory: ``shown_as`` makes the progress line and the
    errors name the Packerfile's source and destination, never the scratch paths."""
    from ggufpack.convert import convert
    from ggufpack.errors import GGUFPackError
    from ggufpack.progress import Progress

    scratch = tmp_path / "ingest" / "build-0" / "convert-src"
    shutil.copytree(base, scratch)
    out = tmp_path / "ingest" / "build-0" / "convert-out" / "m.gguf"
    names = {scratch: "tiny-llama", out: "/models/m.gguf"}
    convert(scratch, out, shown_as=names, progress=Progress("plain"))
    line = capsys.readouterr().err.splitlines()[0]
    assert line == "converting tiny-llama (LlamaForCausalLM model) to F16: /models/m.gguf"
    (scratch / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(GGUFPackError) as failed:
        convert(scratch, out, shown_as=names)
    assert str(failed.value).startswith("tiny-llama/model.safetensors: not a safetensors file")
    assert "ingest" not in str(failed.value)
