"""The stage graph: typed commands grouped into stages, ``--from`` and ``FROM`` resolved, variables
expanded in the right scope, cycles and undefined stages reported, unused stages pruned.

A :class:`Plan` is what ``ggufpack plan`` prints and what the build engine executes.
"""

from __future__ import annotations

import difflib
import os
from collections import ChainMap
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import PackerfileError, SourcePosition, UsageError
from ..oci.platform import DEFAULT_PLATFORM, PLATFORM_RE, parse_platform
from ..packerfile import instructions as ins
from ..packerfile.expand import ExpansionBudget, Scope, check_values
from ..packerfile.lexer import Node, ParsedText

_MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}


def host_platform_string() -> str:
    """This machine's platform in OCI terms, e.g. ``linux/amd64``."""
    machine = os.uname().machine.lower()  # what platform.machine() says, without its 2 ms import
    return f"linux/{_MACHINE_ARCH.get(machine, machine)}"


@dataclass(frozen=True)
class SourceRef:
    """Where a stage starts from or an instruction reads: scratch, a stage, an image or the context."""

    kind: str  # "scratch" | "stage" | "image" | "context"
    stage: int | None = None
    image: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.stage is not None:
            out["stage"] = self.stage
        if self.image is not None:
            out["image"] = self.image
        return out


@dataclass
class Op:
    """One instruction of a stage, typed and expanded, with its resolved ``--from``."""

    command: ins.Command
    source: SourceRef | None = None

    @property
    def makes_layer(self) -> bool:
        return self.command.makes_layer

    def to_json(self, stage: int, index: int) -> dict[str, Any]:
        command = self.command
        return {
            "id": f"{stage}.{index}", "instruction": command.keyword, "line": command.position.line,
            "column": command.position.column, "layer": command.makes_layer, "args": command.arguments(),
            "from": self.source.to_json() if self.source else None, "text": command.original,
        }


@dataclass
class Stage:
    """A ``FROM`` and the instructions under it."""

    index: int
    name: str | None
    base: SourceRef
    platform: str | None
    position: SourcePosition
    from_command: ins.FromCommand
    ops: list[Op] = field(default_factory=list)
    depends_on: set[int] = field(default_factory=set)
    needed: bool = False

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.index)

    @property
    def cmd(self) -> ins.CmdCommand | None:
        """The stage's own CMD: only the last one counts."""
        cmds = [op.command for op in self.ops if isinstance(op.command, ins.CmdCommand)]
        return cmds[-1] if cmds else None

    @property
    def labels(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for op in self.ops:
            if isinstance(op.command, ins.LabelCommand):
                out.update(op.command.labels)
        return out


@dataclass
class EffectiveCmd:
    """The CMD an image ends up with: its own, a base stage's, or the base image's (known at build)."""

    command: ins.CmdCommand | None
    #: "own", "stage" or "image"
    origin: str
    stage: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"origin": self.origin}
        if self.stage is not None:
            out["stage"] = self.stage
        if self.command is not None:
            out.update(self.command.arguments())
        return out


@dataclass
class Plan:
    """The resolved stage graph of one Packerfile for one set of build arguments and target."""

    file: str
    directives: dict[str, str]
    stages: list[Stage]
    target: int
    order: list[int]
    global_args: dict[str, str | None]
    build_args: dict[str, str]
    unused_build_args: list[str]
    platform: str
    cmd: EffectiveCmd

    @property
    def target_stage(self) -> Stage:
        return self.stages[self.target]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "directives": self.directives,
            "platform": self.platform,
            "args": {
                "global": self.global_args, "build_args": self.build_args,
                "unused_build_args": self.unused_build_args,
            },
            "target": self.target,
            "order": self.order,
            "cmd": self.cmd.to_json(),
            "stages": [
                {
                    "index": stage.index, "name": stage.name, "line": stage.position.line,
                    "base": stage.base.to_json(), "platform": stage.platform, "needed": stage.needed,
                    "depends_on": sorted(stage.depends_on), "labels": stage.labels,
                    "ops": [op.to_json(stage.index, i) for i, op in enumerate(stage.ops)],
                }
                for stage in self.stages
            ],
        }


class _Declared(Container[str]):
    """The union of some name sets, without copying them."""

    def __init__(self, parts: tuple[Container[str], ...]) -> None:
        self.parts = parts

    def __contains__(self, name: object) -> bool:
        return any(name in part for part in self.parts)


class _Scopes:
    """ARG bookkeeping: global ARGs are visible everywhere; a stage's ARGs from their line on."""

    def __init__(self, build_args: Mapping[str, str], target_platform: str) -> None:
        check_values(build_args, "--build-arg")
        self.build_args = dict(build_args)
        self.global_values: dict[str, str] = {}
        self.global_declared: set[str] = set()
        self.global_args: dict[str, str | None] = {}
        self.consumed: set[str] = set()
        build = parse_platform(host_platform_string())
        target = parse_platform(target_platform)
        # Docker's automatic platform ARGs, available without a declaration.
        self.automatic = {
            "BUILDPLATFORM": host_platform_string(), "BUILDOS": build["os"], "BUILDARCH": build["architecture"],
            "TARGETPLATFORM": target_platform, "TARGETOS": target["os"], "TARGETARCH": target["architecture"],
            "TARGETVARIANT": target.get("variant", ""),
        }
        self.stage_values: dict[str, str] = {}
        self.stage_declared: set[str] = set()

    def scope(self, declare: Callable[[str, str | None], None] | None = None) -> Scope:
        # live views, not copies: a copy per instruction is quadratic in a file of many ARGs
        values = ChainMap(self.stage_values, self.global_values, self.automatic)
        return Scope(values, _Declared((self.stage_declared, self.global_declared, self.automatic)), declare)

    def declare_global(self, name: str, default: str | None) -> None:
        self.global_declared.add(name)
        self.global_args[name] = default
        value = self._value(name, default, None)
        if value is not None:
            self.global_values[name] = value

    def begin_stage(self) -> None:
        self.stage_values, self.stage_declared = {}, set()

    def declare_stage(self, name: str, default: str | None) -> None:
        self.stage_declared.add(name)
        value = self._value(name, default, self.global_values.get(name))
        if value is not None:
            self.stage_values[name] = value

    def _value(self, name: str, default: str | None, inherited: str | None) -> str | None:
        if name in self.build_args:
            self.consumed.add(name)
            return self.build_args[name]
        return default if default is not None else inherited


def _flag_value_position(node: Node, name: str) -> SourcePosition:
    """Where the value of the (last) flag ``--name=`` is written; the node itself if absent."""
    for flag in reversed(node.flags):
        if flag.name == name:
            return flag.value_position
    return node.position


def _looks_like_image(value: str) -> bool:
    return any(ch in value for ch in "/:@.")


class _Planner:
    def __init__(self, parsed: ParsedText, build_args: Mapping[str, str], platform: str | None) -> None:
        self.parsed = parsed
        self.platform = platform or DEFAULT_PLATFORM
        try:
            parse_platform(self.platform)
        except UsageError as exc:
            raise UsageError(f"--platform: {exc}") from None
        self.scopes = _Scopes(build_args, self.platform)
        self.budget = ExpansionBudget()
        self.stages: list[Stage] = []
        #: stage name → index (a scan per reference is quadratic in a file of many stages)
        self.stage_names: dict[str, int] = {}
        self.pending_refs: list[tuple[Stage, Op | None, str, SourcePosition]] = []

    def error(self, message: str, position: SourcePosition) -> PackerfileError:
        return self.parsed.error(message, position)

    def run(self) -> None:
        nodes = self.parsed.nodes
        first_from = next((i for i, n in enumerate(nodes) if n.keyword == "FROM"), None)
        for node in nodes[: first_from if first_from is not None else len(nodes)]:
            if node.keyword != "ARG":
                self._check_known(node)
                raise self.error(f"{node.keyword} before the first FROM: only ARG may come before FROM",
                                 node.position)
            ins.parse_instruction(self._expansion(node, self.scopes.declare_global))
        if first_from is None:
            position = SourcePosition(self.parsed.file, max(len(self.parsed.lines), 1), 1)
            raise self.error("no FROM instruction: a Packerfile starts a stage with FROM scratch (or a base)",
                             position)
        for node in nodes[first_from:]:
            self._check_known(node)
            if node.keyword == "FROM":
                self._begin_stage(node)
            else:
                command = ins.parse_instruction(self._expansion(node, self.scopes.declare_stage))
                op = Op(command)
                self.stages[-1].ops.append(op)
                if command.from_ref is not None:
                    position = _flag_value_position(node, "from")
                    self.pending_refs.append((self.stages[-1], op, command.from_ref, position))
        self._resolve_refs()

    def _check_known(self, node: Node) -> None:
        if node.keyword not in ins.INSTRUCTIONS:
            raise ins.unsupported_instruction(self.parsed, node)

    def _expansion(self, node: Node, declare: Callable[[str, str | None], None] | None = None) -> ins.Expansion:
        """``node`` in the current scope; ``declare``: where an ARG there declares its variables."""
        return ins.Expansion(self.parsed, node, self.scopes.scope(declare), self.budget)

    def _begin_stage(self, node: Node) -> None:
        # FROM sees only the global ARGs (and the automatic platform ones).
        self.scopes.begin_stage()
        command = ins.parse_instruction(self._expansion(node))
        assert isinstance(command, ins.FromCommand)
        if command.platform is not None and not PLATFORM_RE.match(command.platform):
            raise self.error(f"FROM --platform={command.platform!r}: write os/arch[/variant]",
                             _flag_value_position(node, "platform"))
        if command.name is not None and command.name in self.stage_names:
            other = self.stages[self.stage_names[command.name]]
            raise self.error(
                f"duplicate stage name {command.name!r}: also defined at line {other.position.line}",
                node.words[2].position,
            )
        stage = Stage(
            index=len(self.stages), name=command.name, base=SourceRef("scratch"), platform=command.platform,
            position=node.position, from_command=command,
        )
        self.stages.append(stage)
        if command.name is not None:
            self.stage_names[command.name] = stage.index
        if command.base.lower() != "scratch":
            self.pending_refs.append((stage, None, command.base, node.words[0].position))

    def _resolve(self, value: str, position: SourcePosition, *, is_from: bool) -> SourceRef:
        """Resolve a stage name, stage index, ``context`` or image reference."""
        from ..refs import parse_reference

        lowered = value.lower()
        if value.isdigit():
            index = int(value)
            if index >= len(self.stages):
                raise self.error(f"undefined stage {index}: this Packerfile has {len(self.stages)} stage(s), "
                                 f"numbered from 0", position)
            return SourceRef("stage", stage=index)
        if lowered in self.stage_names:
            return SourceRef("stage", stage=self.stage_names[lowered])
        if lowered == "context" and not is_from:
            return SourceRef("context")
        if lowered == "scratch":
            raise self.error("--from=scratch reads nothing: scratch is empty", position)
        if not is_from and not _looks_like_image(value):
            names = [s.name for s in self.stages if s.name]
            hint = difflib.get_close_matches(lowered, names, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise self.error(
                f"undefined stage {value!r}{suggestion}; to read an image, write its full reference "
                f"(e.g. {value}:latest)", position,
            )
        try:
            parse_reference(value)
        except UsageError as exc:
            # the message already reads "invalid image reference '...': why"
            raise self.error(str(exc), position) from None
        return SourceRef("image", image=value)

    def _resolve_refs(self) -> None:
        edges: dict[tuple[int, int], SourcePosition] = {}
        for stage, op, value, position in self.pending_refs:
            ref = self._resolve(value, position, is_from=op is None)
            if op is None:
                stage.base = ref
            else:
                op.source = ref
            if ref.kind == "stage":
                assert ref.stage is not None
                stage.depends_on.add(ref.stage)
                edges.setdefault((stage.index, ref.stage), position)
        self._check_cycles(edges)

    def _check_cycles(self, edges: dict[tuple[int, int], SourcePosition]) -> None:
        """Report a cycle at the reference that closes it (``edges``: first reference of each edge)."""
        # Iterative depth-first search: a long FROM chain must not hit Python's recursion limit.
        state: dict[int, int] = {}  # 1 = visiting, 2 = done
        for root in self.stages:
            if root.index in state:
                continue
            state[root.index] = 1
            stack = [(root.index, iter(sorted(root.depends_on)))]
            while stack:
                index, deps = stack[-1]
                for dep in deps:
                    if state.get(dep) == 2:
                        continue
                    if state.get(dep) == 1:
                        path = [i for i, _ in stack]
                        cycle = [*path[path.index(dep) :], dep]
                        labels = [self.stages[i].label for i in cycle]
                        if len(labels) > 8:  # keep the message readable: the ends locate the cycle
                            labels = [*labels[:4], f"... ({len(labels) - 7} more)", *labels[-3:]]
                        names = " -> ".join(labels)
                        raise self.error(f"stage dependency cycle: {names}", edges[(index, dep)])
                    state[dep] = 1
                    stack.append((dep, iter(sorted(self.stages[dep].depends_on))))
                    break
                else:
                    state[index] = 2
                    stack.pop()


def _target_index(stages: list[Stage], target: str | None) -> int:
    if target is None:
        return len(stages) - 1
    if target.isdigit() and int(target) < len(stages):
        return int(target)
    for stage in stages:
        if stage.name == target.lower():
            return stage.index
    names = ", ".join(s.label for s in stages)
    raise UsageError(f"--target {target!r} is not a stage of this Packerfile (stages: {names})")


def _topological_order(stages: list[Stage], target: int) -> list[int]:
    """Dependencies first (depth-first post-order, lower stage indexes first); iterative, see above."""
    order: list[int] = []
    seen = {target}
    stack = [(target, iter(sorted(stages[target].depends_on)))]
    while stack:
        index, deps = stack[-1]
        for dep in deps:
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, iter(sorted(stages[dep].depends_on))))
                break
        else:
            stack.pop()
            order.append(index)
    return order


def _effective_cmd(parsed: ParsedText, stages: list[Stage], target: int) -> EffectiveCmd:
    """The final image's CMD: its own, else inherited along its FROM chain; it must name a model."""
    stage = stages[target]
    origin = "own"
    while stage.cmd is None:
        if stage.base.kind == "image":
            return EffectiveCmd(None, "image")
        if stage.base.kind != "stage":
            raise parsed.error(
                'the final stage has no CMD: add CMD ["-m", "<model>.gguf", ...] naming the model to serve',
                stages[target].position,
            )
        assert stage.base.stage is not None
        stage = stages[stage.base.stage]
        origin = "stage"
    cmd = stage.cmd
    if cmd.role("model") is None:
        raise parsed.error('the final CMD names no model: add "-m", "<model>.gguf" to it', cmd.position)
    return EffectiveCmd(cmd, origin, stage.index if origin == "stage" else None)


def build_plan(
    parsed: ParsedText, *, build_args: Mapping[str, str] | None = None, target: str | None = None,
    platform: str | None = None,
) -> Plan:
    """Resolve a lexed Packerfile into a :class:`Plan` for ``target`` (default: the last stage)."""
    planner = _Planner(parsed, build_args or {}, platform)
    planner.run()
    stages = planner.stages
    target_index = _target_index(stages, target)
    order = _topological_order(stages, target_index)
    for index in order:
        stages[index].needed = True
    cmd = _effective_cmd(parsed, stages, target_index)
    scopes = planner.scopes
    declared_anywhere = scopes.consumed | scopes.global_declared
    unused = sorted(name for name in scopes.build_args if name not in declared_anywhere)
    return Plan(
        file=parsed.file, directives=dict(parsed.directives), stages=stages, target=target_index, order=order,
        global_args=scopes.global_args, build_args=dict(scopes.build_args), unused_build_args=unused,
        platform=planner.platform, cmd=cmd,
    )
