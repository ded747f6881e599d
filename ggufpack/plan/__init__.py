"""Packerfile → stage graph (:class:`Plan`), and its text rendering for ``ggufpack plan``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..packerfile import read_packerfile
from .graph import Op, Plan, SourceRef, Stage, build_plan


def plan_file(
    path: Path, *, display_name: str | None = None, build_args: Mapping[str, str] | None = None,
    target: str | None = None, platform: str | None = None,
) -> Plan:
    """Read, lex and plan a Packerfile in one call (the library entry point)."""
    parsed = read_packerfile(path, display_name)
    return build_plan(parsed, build_args=build_args, target=target, platform=platform)


def _describe_source(ref: SourceRef, plan: Plan) -> str:
    if ref.kind == "stage":
        assert ref.stage is not None
        return f"stage {plan.stages[ref.stage].label}"
    if ref.kind == "image":
        return f"image {ref.image}"
    return ref.kind


def _describe_args(op: Op) -> str:
    parts = []
    for key, value in op.command.arguments().items():
        if value in (None, False, [], {}, ()):
            continue
        if key == "from":
            continue
        parts.append(f"{key}={json.dumps(value, ensure_ascii=False)}")
    return " ".join(parts)


def plan_warnings(plan: Plan, cmd: Sequence[str] | None = None) -> list[str]:
    """The warnings ``plan`` and ``build`` print: ``--build-arg`` names no ARG declares (Docker: "One or
    more build-args [X] were not consumed"), and CMD options llama-cpp-python's server, the default
    runtime, cannot honour (then ``run`` needs llama-server). ``cmd``: the built image's CMD (an inherited
    one is known only then); default: the plan's own."""
    from ..options.default_runtime import cannot_honour

    warnings = []
    if plan.unused_build_args:
        warnings.append(f"warning: build args not declared by any ARG: {', '.join(plan.unused_build_args)}")
    own = plan.cmd.command
    args = list(cmd) if cmd is not None else list(own.args) if own is not None else []
    refusals = cannot_honour(args) if args else []
    if refusals:
        where = f"{own.position_of(refusals[0].index)}: " if own is not None and list(own.args) == args else ""
        listed = "; ".join(str(r) for r in refusals)
        warnings.append(f"warning: {where}llama-cpp-python's server (the default runtime) cannot honour {listed}: "
                        "'ggufpack run' serves this image with llama-server, which 'ggufpack backends install "
                        "llama.cpp' builds")
    return warnings


def render_text(plan: Plan) -> str:
    """A human view of the plan: stages in order, ops with lines, which make layers, dependencies."""
    lines = [
        f"{plan.file}: {len(plan.stages)} stage(s), target {plan.target_stage.label}, platform {plan.platform}",
        f"execution order: {', '.join(plan.stages[i].label for i in plan.order)}",
    ]
    lines += plan_warnings(plan)
    for stage in plan.stages:
        lines.append("")
        state = "needed" if stage.needed else "pruned (not needed by the target)"
        deps = f", depends on {', '.join(plan.stages[d].label for d in sorted(stage.depends_on))}" \
            if stage.depends_on else ""
        base = "scratch" if stage.base.kind == "scratch" else _describe_source(stage.base, plan)
        lines.append(f"stage {stage.label} (line {stage.position.line}): FROM {base} [{state}{deps}]")
        for index, op in enumerate(stage.ops):
            layer = "layer" if op.makes_layer else "meta "
            source = f" from {_describe_source(op.source, plan)}" if op.source else ""
            lines.append(
                f"  {stage.index}.{index:<3} line {op.command.position.line:<4} {layer} "
                f"{op.command.keyword}{source} {_describe_args(op)}".rstrip()
            )
    cmd = plan.cmd
    lines.append("")
    if cmd.command is None:
        lines.append("CMD: inherited from the base image at build time")
    else:
        origin = "own" if cmd.origin == "own" else f"inherited from stage {plan.stages[cmd.stage or 0].label}"
        lines.append(f"CMD ({origin}): {json.dumps(list(cmd.command.args), ensure_ascii=False)}")
        for role in cmd.command.roles:
            lines.append(f"  {role.role}: {role.value} (argument {role.index})")
    return "\n".join(lines)


__all__ = ["Op", "Plan", "SourceRef", "Stage", "build_plan", "plan_file", "plan_warnings", "render_text"]
