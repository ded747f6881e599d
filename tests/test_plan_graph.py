"""The stage graph: ARG scopes, stage references, --target pruning, order, CMD inheritance and roles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ggufpack.errors import PackerfileError
from ggufpack.packerfile import lex
from ggufpack.plan import Plan, build_plan, render_text

CMD = 'CMD ["-m", "m.gguf"]\n'


def plan_of(text: str, **kwargs: object) -> Plan:
    return build_plan(lex(text, "P"), **kwargs)  # type: ignore[arg-type]


def sources(plan: Plan, stage: int, index: int) -> list[str]:
    return plan.stages[stage].ops[index].command.arguments()["sources"]


# ------------------------------------------------------------------------------------------- ARGs

GLOBALS = "ARG BASE=scratch\nARG Q=Q4_K_M\nARG NODEFAULT\n"


def test_global_args_in_from_lines_and_every_stage() -> None:
    text = GLOBALS + "FROM $BASE AS a\nCOPY $Q /\nFROM ${BASE} AS b\nCOPY $Q /\n" + CMD
    plan = plan_of(text)
    assert [s.base.kind for s in plan.stages] == ["scratch", "scratch"]
    assert sources(plan, 0, 0) == ["Q4_K_M"]
    assert sources(plan, 1, 0) == ["Q4_K_M"]  # unlike Docker, no re-declaration needed
    assert plan.global_args == {"BASE": "scratch", "Q": "Q4_K_M", "NODEFAULT": None}


def test_declared_without_value_expands_to_empty() -> None:
    plan = plan_of(GLOBALS + "FROM scratch\nCOPY a${NODEFAULT}b /\n" + CMD)
    assert sources(plan, 0, 0) == ["ab"]


def test_stage_arg_shadows_global_only_in_its_stage() -> None:
    text = GLOBALS + "FROM scratch\nCOPY $Q /\nARG Q=Q8_0\nCOPY $Q /\nFROM scratch\nCOPY $Q /\n" + CMD
    plan = plan_of(text)
    assert sources(plan, 0, 0) == ["Q4_K_M"]
    assert sources(plan, 0, 2) == ["Q8_0"]
    assert sources(plan, 1, 0) == ["Q4_K_M"]


def test_stage_arg_without_default_takes_the_global_value() -> None:
    plan = plan_of(GLOBALS + "FROM scratch\nARG Q\nCOPY $Q /\n" + CMD)
    assert sources(plan, 0, 1) == ["Q4_K_M"]


def test_stage_arg_is_not_visible_in_later_from_or_stage() -> None:
    with pytest.raises(PackerfileError, match="variable 'LOCAL' is not declared") as info:
        plan_of("FROM scratch\nARG LOCAL=x\nFROM $LOCAL\n")
    assert (info.value.position.line, info.value.position.column) == (3, 6)


def test_stage_arg_visible_only_after_its_line() -> None:
    with pytest.raises(PackerfileError, match="'LATE' is not declared") as info:
        plan_of("FROM scratch\nCOPY $LATE /\nARG LATE=x\n")
    assert info.value.position.line == 2


def test_build_args_override_global_and_stage_defaults() -> None:
    text = GLOBALS + "FROM scratch\nCOPY $Q $NODEFAULT\nARG Q=Q8_0\nCOPY $Q /\n" + CMD
    plan = plan_of(text, build_args={"Q": "IQ4_XS", "NODEFAULT": "/d", "EXTRA": "1", "OTHER": "2"})
    assert sources(plan, 0, 0) == ["IQ4_XS"]
    assert plan.stages[0].ops[0].command.arguments()["dest"] == "/d"
    assert sources(plan, 0, 2) == ["IQ4_XS"]
    assert plan.unused_build_args == ["EXTRA", "OTHER"]
    assert plan.build_args["Q"] == "IQ4_XS"
    assert "build args not declared by any ARG: EXTRA, OTHER" in render_text(plan)


def test_build_arg_declared_only_in_a_stage_is_used() -> None:
    plan = plan_of("FROM scratch\nARG S\nCOPY $S /\n" + CMD, build_args={"S": "x"})
    assert plan.unused_build_args == []
    assert sources(plan, 0, 1) == ["x"]


def test_build_arg_does_not_declare() -> None:
    with pytest.raises(PackerfileError, match="'X' is not declared"):
        plan_of("FROM scratch\nCOPY $X /\n" + CMD, build_args={"X": "1"})


def test_automatic_platform_args() -> None:
    text = "FROM scratch\nCOPY $TARGETPLATFORM $TARGETOS $TARGETARCH x${TARGETVARIANT} $BUILDOS /\n" + CMD
    plan = plan_of(text, platform="linux/arm64/v8")
    assert sources(plan, 0, 0) == ["linux/arm64/v8", "linux", "arm64", "xv8", "linux"]
    assert plan.platform == "linux/arm64/v8"
    plain = plan_of(text, platform="linux/amd64")
    assert sources(plain, 0, 0)[3] == "x"


def test_automatic_args_in_from_line() -> None:
    plan = plan_of("FROM scratch AS s-$TARGETARCH\n" + CMD, platform="linux/amd64")
    assert plan.stages[0].name == "s-amd64"


# -------------------------------------------------------------------------------- stage references


def test_refs_by_name_case_insensitive_and_index() -> None:
    text = (
        "FROM scratch AS Base\nCOPY a /\nFROM scratch AS conv\nCONVERT --from=BASE /a /m.gguf\n"
        "FROM scratch\nQUANTIZE --from=1 /m.gguf /q.gguf\nCOPY --from=base /a /\n" + CMD
    )
    plan = plan_of(text)
    assert plan.stages[0].name == "base"
    convert = plan.stages[1].ops[0]
    assert (convert.source.kind, convert.source.stage) == ("stage", 0)
    assert convert.command.arguments()["type"] == "F16"
    quantize = plan.stages[2].ops[0]
    assert (quantize.source.kind, quantize.source.stage) == ("stage", 1)
    assert quantize.command.arguments()["type"] == "Q5_K_M"
    assert plan.stages[2].depends_on == {0, 1}
    assert plan.order == [0, 1, 2]


def test_forward_references_resolve() -> None:
    text = "FROM scratch\nCOPY --from=later /a /\nCOPY --from=2 /b /\n" + CMD + "FROM scratch AS later\nFROM later\n"
    plan = plan_of(text, target="0")
    assert plan.stages[0].ops[0].source.stage == 1
    assert plan.stages[0].ops[1].source.stage == 2
    assert plan.order == [1, 2, 0]


def test_from_context_and_images() -> None:
    text = (
        "FROM ghcr.io/org/base:q4 AS b\nCOPY --from=context a /\nCOPY --from=localhost:5000/x/y@sha256:"
        + "0" * 64
        + " /m /\nCONVERT --from=hf/model:1 /a /b\n"
    )
    plan = plan_of(text)
    stage = plan.stages[0]
    assert stage.base.to_json() == {"kind": "image", "image": "ghcr.io/org/base:q4"}
    assert [op.source.kind for op in stage.ops] == ["context", "image", "image"]
    assert stage.ops[2].source.image == "hf/model:1"
    # a non-scratch image base passes on its CMD at build time
    assert plan.cmd.origin == "image"
    assert plan.cmd.command is None
    assert "CMD: inherited from the base image at build time" in render_text(plan)


def test_plain_name_in_from_is_an_image() -> None:
    plan = plan_of("FROM mymodel\n")
    assert plan.stages[0].base.to_json() == {"kind": "image", "image": "mymodel"}


def test_context_is_a_stage_name_when_declared() -> None:
    plan = plan_of("FROM scratch AS context\nFROM scratch\nCOPY --from=context a /\n" + CMD)
    assert plan.stages[1].ops[0].source.to_json() == {"kind": "stage", "stage": 0}


# ----------------------------------------------------------------------------------- target, order

DIAMOND = (
    "FROM scratch AS base\nCOPY a /\n"
    "FROM base AS left\nCOPY b /\n"
    "FROM scratch AS right\nCOPY --from=base /a /\n"
    "FROM scratch AS unused\nCOPY c /\n"
    "FROM left AS final\nCOPY --from=right /a /r\n" + CMD
)


def test_execution_order_and_pruning() -> None:
    plan = plan_of(DIAMOND)
    assert plan.target == 4
    assert plan.order == [0, 1, 2, 4]
    assert [s.needed for s in plan.stages] == [True, True, True, False, True]
    assert plan.stages[4].depends_on == {1, 2}


def test_target_by_name_and_index() -> None:
    text = DIAMOND.replace("COPY c /\n", "COPY c /\n" + CMD)
    by_name = plan_of(text, target="Unused")
    assert by_name.target == 3
    assert by_name.order == [3]
    assert [s.needed for s in by_name.stages] == [False, False, False, True, False]
    text = text.replace("COPY --from=base /a /\n", "COPY --from=base /a /\n" + CMD)
    assert plan_of(text, target="2").order == [0, 2]


def test_plan_json_shape() -> None:
    data = plan_of(DIAMOND).to_json()
    json.dumps(data)
    assert data["order"] == [0, 1, 2, 4]
    op = data["stages"][4]["ops"][0]
    assert op["id"] == "4.0"
    assert op["from"] == {"kind": "stage", "stage": 2}
    assert op["layer"] is True
    assert (op["line"], op["column"]) == (10, 1)
    assert data["stages"][4]["ops"][1]["layer"] is False


# ------------------------------------------------------------------------------------------- CMD


def test_cmd_roles_with_indexes() -> None:
    text = (
        'FROM scratch\nCMD ["-c", "4096", "-m", "/m.gguf", "-md", "/d.gguf", "--mmproj", "/p.gguf",\\\n'
        ' "--lora", "/l1.gguf,/l3.gguf", "--lora-scaled", "/l2.gguf:0.5", "--control-vector", "/cv.gguf",\\\n'
        ' "--control-vector-scaled", "/cv2.gguf:0.8", "--port", "8080"]\n'
    )
    cmd = plan_of(text).cmd
    assert cmd.origin == "own"
    assert [(r.role, r.value, r.index) for r in cmd.command.roles] == [
        ("model", "/m.gguf", 3), ("drafter", "/d.gguf", 5), ("projector", "/p.gguf", 7),
        ("adapter", "/l1.gguf", 9), ("adapter", "/l3.gguf", 9), ("adapter", "/l2.gguf", 11),
        ("adapter", "/cv.gguf", 13), ("adapter", "/cv2.gguf", 15),
    ]


def test_cmd_long_option_names() -> None:
    cmd = plan_of('FROM scratch\nCMD ["--model", "/m", "--model-draft", "/d", "-mm", "/p"]\n').cmd.command
    assert [(r.role, r.index) for r in cmd.roles] == [("model", 1), ("drafter", 3), ("projector", 5)]


def test_last_cmd_wins() -> None:
    plan = plan_of('FROM scratch\nCMD ["--port", "1"]\nCMD ["-m", "/last.gguf"]\n')
    assert plan.cmd.command.args == ("-m", "/last.gguf")
    # an earlier CMD without -m is fine as long as the last one names a model
    with pytest.raises(PackerfileError, match="names no model") as info:
        plan_of('FROM scratch\nCMD ["-m", "/a"]\nCMD ["--port", "1"]\n')
    assert info.value.position.line == 3


def test_cmd_inherited_through_stage_chain() -> None:
    text = "FROM scratch AS a\n" + CMD + "FROM a AS b\nLABEL x=y\nFROM b AS c\nCOPY z /\n"
    plan = plan_of(text)
    assert plan.cmd.origin == "stage"
    assert plan.cmd.stage == 0
    assert plan.cmd.command.role("model").value == "m.gguf"
    assert plan.cmd.to_json()["origin"] == "stage"
    assert "CMD (inherited from stage a)" in render_text(plan)


def test_cmd_inherited_from_image_through_stage() -> None:
    plan = plan_of("FROM example.org/model:q4 AS a\nFROM a\nLABEL x=y\n")
    assert (plan.cmd.origin, plan.cmd.command) == ("image", None)


def test_own_cmd_overrides_inherited() -> None:
    plan = plan_of("FROM scratch AS a\n" + CMD + 'FROM a\nCMD ["-m", "/mine"]\n')
    assert plan.cmd.origin == "own"
    assert plan.cmd.command.args == ("-m", "/mine")


def test_cmd_of_non_target_stage_is_not_checked_for_model() -> None:
    plan = plan_of('FROM scratch AS helper\nCMD ["--port", "1"]\nFROM scratch\n' + CMD)
    assert plan.cmd.command.args == ("-m", "m.gguf")


def test_target_stage_is_the_one_checked_for_cmd() -> None:
    with pytest.raises(PackerfileError, match="the final stage has no CMD") as info:
        plan_of("FROM scratch AS helper\nCOPY a /\nFROM scratch\n" + CMD, target="helper")
    assert info.value.position.line == 1


# ------------------------------------------------------------------------------------- the CLI


def test_cli_plan_json_and_text(tmp_path: Path) -> None:
    (tmp_path / "GGUFPackerfile").write_text("ARG Q=Q4_K_M\n" + DIAMOND.replace("COPY b /", "QUANTIZE --type=$Q a b"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "ggufpack", "plan", "--build-arg", "Q=q8_0", "--format", "json", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["stages"][1]["ops"][0]["args"]["type"] == "Q8_0"
    assert data["args"]["build_args"] == {"Q": "q8_0"}
    text = subprocess.run([*cmd[:-3], str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
    assert text.returncode == 0
    assert "execution order: base, left, right, final" in text.stdout
    assert "pruned (not needed by the target)" in text.stdout
