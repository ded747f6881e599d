"""Golden tests of ``ggufpack plan`` on every sample under ``Packerfile.samples/``.

Each sample directory holds a ``GGUFPackerfile``; its resolved plan (stages, bases, needed/pruned,
dependencies, ops with lines, flags and expanded arguments, heredoc bodies, CMD with roles and
indexes, target and order) must equal ``tests/golden/<sample>.json``. Only the Packerfile path and
the platform, which depend on the machine, are normalized away.

The goldens are the specification, reviewed by hand against the Packerfiles. To regenerate them
after an intended change: ``GGUFPACK_UPDATE_GOLDEN=1 pytest tests/test_samples_plan.py``, then read
the diff line by line before keeping it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ggufpack.cli import main
from tests.helpers.golden import check_golden, golden_path, normalize_plan, updating

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "Packerfile.samples"
PACKERFILE = "GGUFPackerfile"

#: the samples this suite was written for; any other directory with a GGUFPackerfile is checked too
EXPECTED_SAMPLES = (
    "single-stage", "multi-stage", "add-from-http", "add-from-git", "convert-lora", "from-base-image",
    "inherit-cmd", "heredocs-and-args", "imatrix",
)
#: samples owned elsewhere that may not exist yet (checked once they do)
OPTIONAL_SAMPLES = ("quickstart",)

#: extra plans with options: (sample, variant name, extra CLI arguments)
VARIANTS: list[tuple[str, str, list[str]]] = [
    ("multi-stage", "build-args",
     ["--build-arg", "QUANT_TYPE=Q8_0", "--build-arg", "MODEL=Qwen2.5-1.5B-Instruct",
      "--build-arg", "CONTEXT_SIZE=32768"]),
    ("multi-stage", "target-f16", ["--target", "f16"]),
    ("heredocs-and-args", "build-args", ["--build-arg", "QUANT=Q8_0", "--build-arg", "SUFFIX=samples"]),
    ("inherit-cmd", "base-image",
     ["--build-arg", "BASE=registry.example.com/models/qwen2.5:0.5b-instruct-q4_k_m"]),
    ("from-base-image", "registry-base", ["--build-arg", "BASE=ghcr.io/ggml-org/llama.cpp:server"]),
]


def _sample_names() -> list[str]:
    found = sorted(p.name for p in SAMPLES.iterdir() if p.is_dir()) if SAMPLES.is_dir() else []
    return sorted(set(found) | set(EXPECTED_SAMPLES))


def _sample_dir(name: str) -> Path:
    directory = SAMPLES / name
    if name in OPTIONAL_SAMPLES and not (directory / PACKERFILE).is_file():
        pytest.skip(f"sample {name!r} does not exist yet")
    assert (directory / PACKERFILE).is_file(), f"sample {name!r} has no {PACKERFILE}"
    if name in OPTIONAL_SAMPLES and not golden_path(name).exists() and not updating():
        pytest.skip(f"sample {name!r} has no golden yet: run with GGUFPACK_UPDATE_GOLDEN=1 and review it")
    return directory


def _cli_args(name: str, extra: list[str], fmt: str = "json") -> list[str]:
    directory = SAMPLES / name
    rel = directory.relative_to(REPO)
    return ["plan", "--format", fmt, *extra, "-f", str(rel / PACKERFILE), str(rel)]


def _run_subprocess(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ggufpack", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
    )


def _plan_subprocess(name: str, extra: list[str] | None = None) -> dict[str, Any]:
    result = _run_subprocess(_cli_args(name, extra or []))
    assert result.returncode == 0, f"ggufpack plan failed ({result.returncode}):\n{result.stderr}"
    assert result.stderr == ""
    plan: dict[str, Any] = json.loads(result.stdout)
    assert plan["file"] == str((SAMPLES / name / PACKERFILE).relative_to(REPO))
    return plan


def _plan_in_process(
    name: str, extra: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fmt: str = "json",
) -> str:
    monkeypatch.chdir(REPO)
    capsys.readouterr()
    code = main(_cli_args(name, extra, fmt))
    out, err = capsys.readouterr()
    assert code == 0, f"ggufpack plan failed ({code}):\n{err}"
    assert err == ""
    return out


def _golden_name(sample: str, variant: str | None = None) -> str:
    return sample if variant is None else f"{sample}--{variant}"


def _stage(plan: dict[str, Any], label: str) -> dict[str, Any]:
    return next(s for s in plan["stages"] if s["name"] == label or str(s["index"]) == label)


def _ops(plan: dict[str, Any], instruction: str) -> list[dict[str, Any]]:
    return [op for stage in plan["stages"] for op in stage["ops"] if op["instruction"] == instruction]


# ------------------------------------------------------------------------------------ goldens


def test_every_expected_sample_exists() -> None:
    for name in EXPECTED_SAMPLES:
        directory = SAMPLES / name
        assert (directory / PACKERFILE).is_file(), name
        assert (directory / "README.md").is_file(), name
        readme = (directory / "README.md").read_text(encoding="utf-8")
        assert "ggufpack build -t " in readme and f"Packerfile.samples/{name}" in readme, name
        assert "ggufpack plan" in readme, name


@pytest.mark.parametrize("name", _sample_names())
def test_sample_plan_matches_golden(name: str) -> None:
    _sample_dir(name)
    check_golden(_golden_name(name), normalize_plan(_plan_subprocess(name)))


@pytest.mark.parametrize("name", _sample_names())
def test_sample_plan_in_process_matches_golden(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _sample_dir(name)
    if updating():
        pytest.skip("goldens are written by the subprocess test")
    plan = json.loads(_plan_in_process(name, [], capsys, monkeypatch))
    check_golden(_golden_name(name), normalize_plan(plan))


@pytest.mark.parametrize(("sample", "variant", "extra"), VARIANTS, ids=[f"{s}--{v}" for s, v, _ in VARIANTS])
def test_sample_variant_matches_golden(sample: str, variant: str, extra: list[str]) -> None:
    _sample_dir(sample)
    check_golden(_golden_name(sample, variant), normalize_plan(_plan_subprocess(sample, extra)))


def test_default_packerfile_name_and_context() -> None:
    """``ggufpack plan DIR`` reads DIR/GGUFPackerfile: the same plan as with ``-f``."""
    result = _run_subprocess(["plan", "--format", "json", "Packerfile.samples/single-stage"])
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["file"] == "Packerfile.samples/single-stage/GGUFPackerfile"
    assert normalize_plan(plan) == normalize_plan(_plan_subprocess("single-stage"))


# ----------------------------------------------------------- the facts each golden pins, spelled out


def test_multi_stage_defaults() -> None:
    plan = _plan_subprocess("multi-stage")
    assert [s["name"] for s in plan["stages"]] == ["f16", "quantized"]
    assert plan["target"] == 1 and plan["order"] == [0, 1]
    assert [s["needed"] for s in plan["stages"]] == [True, True]
    assert _stage(plan, "quantized")["depends_on"] == [0]
    (quantize,) = _ops(plan, "QUANTIZE")
    assert quantize["from"] == {"kind": "stage", "stage": 0}
    assert quantize["args"]["type"] == "Q5_K_M"
    assert quantize["args"]["source"] == "Qwen2.5-0.5B-Instruct.F16.gguf"
    assert quantize["args"]["dest"] == "Qwen2.5-0.5B-Instruct.Q5_K_M.gguf"
    assert plan["cmd"]["origin"] == "own"
    assert plan["cmd"]["args"][:4] == ["-m", "Qwen2.5-0.5B-Instruct.Q5_K_M.gguf", "-c", "8192"]
    template = plan["cmd"]["args"][5]
    assert template.startswith("{% for message in messages %}") and "'\\n'" in template
    assert plan["cmd"]["roles"] == [{"role": "model", "value": "Qwen2.5-0.5B-Instruct.Q5_K_M.gguf", "index": 1}]


def test_multi_stage_build_args_override_global_args_in_every_stage() -> None:
    plan = _plan_subprocess("multi-stage", [
        "--build-arg", "QUANT_TYPE=Q8_0", "--build-arg", "MODEL=Qwen2.5-1.5B-Instruct",
    ])
    convert = _ops(plan, "CONVERT")[0]["args"]
    assert convert["source"] == "Qwen2.5-1.5B-Instruct"
    assert convert["dest"] == "Qwen2.5-1.5B-Instruct.F16.gguf"
    quantize = _ops(plan, "QUANTIZE")[0]["args"]
    assert (quantize["type"], quantize["dest"]) == ("Q8_0", "Qwen2.5-1.5B-Instruct.Q8_0.gguf")
    assert plan["cmd"]["roles"][0]["value"] == "Qwen2.5-1.5B-Instruct.Q8_0.gguf"
    assert plan["args"]["build_args"] == {"QUANT_TYPE": "Q8_0", "MODEL": "Qwen2.5-1.5B-Instruct"}
    assert plan["args"]["unused_build_args"] == []
    # the declared defaults are what the Packerfile says, whatever the overrides
    assert plan["args"]["global"]["QUANT_TYPE"] == "Q5_K_M"


def test_multi_stage_unused_build_arg_is_reported() -> None:
    as_json = _run_subprocess(_cli_args("multi-stage", ["--build-arg", "QUANT=Q8_0"]))
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["args"]["unused_build_args"] == ["QUANT"]
    assert as_json.stderr == "warning: build args not declared by any ARG: QUANT\n"  # stdout stays JSON
    result = _run_subprocess(_cli_args("multi-stage", ["--build-arg", "QUANT=Q8_0"], "text"))
    assert result.returncode == 0, result.stderr
    assert "warning: build args not declared by any ARG: QUANT" in result.stdout.splitlines()


@pytest.mark.parametrize("target", ["f16", "F16", "0"])
def test_multi_stage_target_prunes_later_stage(target: str) -> None:
    plan = _plan_subprocess("multi-stage", ["--target", target])
    assert plan["target"] == 0 and plan["order"] == [0]
    assert [s["needed"] for s in plan["stages"]] == [True, False]
    assert plan["cmd"]["origin"] == "own"
    assert plan["cmd"]["roles"] == [{"role": "model", "value": "Qwen2.5-0.5B-Instruct.F16.gguf", "index": 1}]


def test_multi_stage_unknown_target_is_a_usage_error() -> None:
    result = _run_subprocess(_cli_args("multi-stage", ["--target", "q8"]))
    assert result.returncode == 2
    assert "q8" in result.stderr and "f16" in result.stderr and "quantized" in result.stderr
    assert result.stdout == ""


def test_inherit_cmd_from_stage_and_from_image() -> None:
    plan = _plan_subprocess("inherit-cmd")
    reviewer = _stage(plan, "reviewer")
    assert reviewer["base"] == {"kind": "stage", "stage": 0}
    assert not [op for op in reviewer["ops"] if op["instruction"] == "CMD"]
    assert plan["cmd"]["origin"] == "stage" and plan["cmd"]["stage"] == 0
    assert plan["cmd"]["roles"] == [{"role": "model", "value": "model.gguf", "index": 1}]

    image = "registry.example.com/models/qwen2.5:0.5b-instruct-q4_k_m"
    plan = _plan_subprocess("inherit-cmd", ["--build-arg", f"BASE={image}"])
    assert _stage(plan, "reviewer")["base"] == {"kind": "image", "image": image}
    assert plan["order"] == [1]
    assert [s["needed"] for s in plan["stages"]] == [False, True]
    assert plan["cmd"] == {"origin": "image"}


def test_heredocs_and_args_bodies() -> None:
    plan = _plan_subprocess("heredocs-and-args")
    assert plan["directives"] == {"syntax": "ggufpack/packerfile:1", "escape": "`"}
    cats = {op["args"]["dest"]: op["args"]["content"] for op in _ops(plan, "CAT")}
    # <<-EOF: tabs stripped, variables expanded, backslashes literal under escape=`
    assert cats["prompts/system.txt"] == (
        "Hello from SmolLM2-135M-Instruct.\n"
        "You run as SmolLM2-135M-Instruct (Q4_K_M); paths like C:\\models\\ stay as written.\n"
    )
    # <<'EOF': nothing expanded
    assert "${NOT_A_VARIABLE}" in cats["templates/chat.jinja"]
    assert "\\n{{ m['content'] }}" in cats["templates/chat.jinja"]
    two = next(op for op in _ops(plan, "COPY") if op["args"]["contents"])
    assert two["args"]["contents"] == [
        {"name": "greeting.txt", "data": "Hello from SmolLM2-135M-Instruct!\n"},
        {"name": "notes.txt", "data": "Written for $MODEL, but not expanded: the delimiter is quoted.\n"},
    ]
    assert two["args"]["dest"] == "prompts/"
    quantize = _ops(plan, "QUANTIZE")[0]
    assert quantize["line"] == 17
    assert (quantize["args"]["type"], quantize["args"]["dest"]) == ("Q4_K_M", "SmolLM2-135M-Instruct.Q4_K_M.gguf")
    labels = plan["stages"][1]["labels"]
    assert labels == {
        "org.opencontainers.image.title": "SmolLM2-135M-Instruct Q4_K_M",
        "com.example.raw": "${MODEL} as written",
        "com.example.price": "$0.00",
        "com.example.comment": "A tiny model, packed for the samples",
    }
    spaced = _ops(plan, "COPY")[-1]["args"]
    assert spaced["sources"] == ["few shot examples.txt"]
    assert spaced["dest"] == "prompts/few shot SmolLM2-135M-Instruct.txt"


def test_heredocs_and_args_with_suffix_and_quant() -> None:
    plan = _plan_subprocess("heredocs-and-args", ["--build-arg", "QUANT=Q8_0", "--build-arg", "SUFFIX=samples"])
    quantize = _ops(plan, "QUANTIZE")[0]["args"]
    assert (quantize["type"], quantize["dest"]) == ("Q8_0", "SmolLM2-135M-Instruct-samples.Q8_0.gguf")
    copy = _ops(plan, "COPY")[0]
    assert copy["args"]["sources"] == ["SmolLM2-135M-Instruct-samples.Q8_0.gguf"]
    assert plan["stages"][1]["labels"]["org.opencontainers.image.title"] == "SmolLM2-135M-Instruct Q8_0"


def test_add_checksum_and_git_ref() -> None:
    http = _plan_subprocess("add-from-http")
    add = _ops(http, "ADD")[0]["args"]
    assert add["checksum"] == "sha256:4f7d2c1b8e9a0d3c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1a0"
    assert add["dest"] == "models/"
    git = _plan_subprocess("add-from-git")
    add = _ops(git, "ADD")[0]["args"]
    assert add["sources"] == ["https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct.git#main"]
    assert add["keep_git_dir"] is True
    lora = _plan_subprocess("convert-lora")
    convert = _ops(lora, "CONVERT")[0]["args"]
    assert (convert["class"], convert["base"], convert["type"]) == ("lora", "Qwen2.5-0.5B-Instruct", "F16")
    assert [r["role"] for r in lora["cmd"]["roles"]] == ["model", "adapter"]
    assert [r["index"] for r in lora["cmd"]["roles"]] == [1, 3]


def test_from_base_image_ignore_file_sends_only_the_prompt() -> None:
    from ggufpack.sources.ignore import IgnoreRules

    rules = IgnoreRules.load(SAMPLES / "from-base-image")
    assert not rules.is_excluded("system-prompt.txt")
    assert rules.is_excluded("README.md")
    assert rules.is_excluded("Qwen2.5-0.5B-Instruct/model.safetensors")


# ------------------------------------------------------------------------------- text format


def test_text_format_key_lines(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _plan_in_process("multi-stage", [], capsys, monkeypatch, fmt="text").splitlines()
    platform = json.loads(_plan_in_process("multi-stage", [], capsys, monkeypatch))["platform"]
    assert lines[0] == (
        f"Packerfile.samples/multi-stage/GGUFPackerfile: 2 stage(s), target quantized, platform {platform}"
    )
    assert lines[1] == "execution order: f16, quantized"
    assert "stage f16 (line 11): FROM scratch [needed]" in lines
    assert "stage quantized (line 16): FROM scratch [needed, depends on f16]" in lines
    quantize = next(line for line in lines if "QUANTIZE" in line)
    assert quantize.split() [:5] == ["1.1", "line", "18", "layer", "QUANTIZE"]
    assert "from stage f16" in quantize and 'type="Q5_K_M"' in quantize
    assert any(line.split()[:4] == ["1.0", "line", "17", "meta"] and "LABEL" in line for line in lines)
    cmd = next(line for line in lines if line.startswith("CMD (own): "))
    assert json.loads(cmd.removeprefix("CMD (own): "))[:2] == ["-m", "Qwen2.5-0.5B-Instruct.Q5_K_M.gguf"]
    assert lines[-1] == "  model: Qwen2.5-0.5B-Instruct.Q5_K_M.gguf (argument 1)"


def test_text_format_pruned_and_inherited(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _plan_in_process("multi-stage", ["--target", "f16"], capsys, monkeypatch, fmt="text").splitlines()
    assert lines[1] == "execution order: f16"
    assert "stage quantized (line 16): FROM scratch [pruned (not needed by the target), depends on f16]" in lines

    lines = _plan_in_process("inherit-cmd", [], capsys, monkeypatch, fmt="text").splitlines()
    assert "stage reviewer (line 16): FROM stage assistant [needed, depends on assistant]" in lines
    assert lines[-2] == 'CMD (inherited from stage assistant): ["-m", "model.gguf", "-c", "4096", ' \
        '"--system-prompt-file", "system-prompt.txt"]'
    assert lines[-1] == "  model: model.gguf (argument 1)"

    image = "registry.example.com/models/qwen2.5:0.5b-instruct-q4_k_m"
    lines = _plan_in_process("inherit-cmd", ["--build-arg", f"BASE={image}"], capsys, monkeypatch,
                             fmt="text").splitlines()
    assert f"stage reviewer (line 16): FROM image {image} [needed]" in lines
    assert "stage assistant (line 9): FROM scratch [pruned (not needed by the target)]" in lines
    assert lines[-1] == "CMD: inherited from the base image at build time"
