"""LLB definitions built in Python: the graph a frontend hands to BuildKit's ``Solve``.

An :class:`Output` is one result of one op (``None`` is scratch, the empty filesystem). Ops are made by
:func:`image`, :func:`local`, :func:`http`, :func:`git` (sources), :class:`FileOps` (chained mkfile /
mkdir / copy / rm actions), :func:`exec_op` (a process with mounts) and marshalled by :func:`marshal`
into a ``pb.Definition``: every op serialized (deterministically), dependencies first, keyed by the
sha256 of its bytes, plus a last "terminal" op with one input, the result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .protos import OPS_ENUM_VALUES, ops

#: ``mode`` of a FileAction / ``timestamp`` meaning "unset" (BuildKit's convention)
UNSET = -1
LINUX_AMD64 = ("linux", "amd64")


@dataclass(eq=False)
class Node:
    """One op; ``inputs`` are the outputs it reads, in order (their indices are the op's input indices)."""

    op: Any  # ops.Op without its ``inputs``
    inputs: list[Output | None] = field(default_factory=list)
    description: dict[str, str] = field(default_factory=dict)
    caps: tuple[str, ...] = ()
    ignore_cache: bool = False


@dataclass(frozen=True, eq=False)
class Output:
    node: Node
    index: int = 0


State = Output | None  # None: scratch


def platform_pb(os_name: str = "linux", arch: str = "amd64", variant: str = "") -> Any:
    return ops.Platform(OS=os_name, Architecture=arch, Variant=variant)


def source(identifier: str, attrs: dict[str, str] | None = None, *, platform: Any = None,
           caps: Sequence[str] = (), description: dict[str, str] | None = None) -> Output:
    op = ops.Op(source=ops.SourceOp(identifier=identifier, attrs=attrs or {}))
    if platform is not None:
        op.platform.CopyFrom(platform)
    return Output(Node(op, [], dict(description or {}), tuple(caps)))


def image(ref: str, *, platform: Any = None, name: str | None = None) -> Output:
    """An image source: ``ref`` fully qualified (``docker.io/library/x:tag``, ``127.0.0.1:5000/y@sha256:...``)."""
    return source(f"docker-image://{ref}", platform=platform or platform_pb(), caps=("source.image",),
                  description={"llb.customname": name} if name else None)


def local(name: str, *, session_id: str = "", include: Sequence[str] = (), exclude: Sequence[str] = (),
          shared_key: str = "", follow_paths: Sequence[str] = (), custom_name: str = "") -> Output:
    """A local source the client sends (``context``, ``dockerfile``), filtered by patterns."""
    attrs: dict[str, str] = {}
    if session_id:
        attrs["local.session"] = session_id
    if include:
        attrs["local.includepattern"] = json.dumps(list(include))
    if exclude:
        attrs["local.excludepatterns"] = json.dumps(list(exclude))
    if follow_paths:
        attrs["local.followpaths"] = json.dumps(list(follow_paths))
    if shared_key:
        attrs["local.sharedkeyhint"] = shared_key
    caps = ["source.local"] + (["source.local.includepatterns"] if include else []) + (
        ["source.local.excludepatterns"] if exclude else [])
    return source(f"local://{name}", attrs, caps=caps,
                  description={"llb.customname": custom_name} if custom_name else None)


def http(url: str, *, checksum: str = "", filename: str = "", custom_name: str = "") -> Output:
    attrs = {}
    if checksum:
        attrs["http.checksum"] = checksum
    if filename:
        attrs["http.filename"] = filename
    return source(url, attrs, caps=("source.http",) + (("source.http.checksum",) if checksum else ()),
                  description={"llb.customname": custom_name} if custom_name else None)


def git(remote: str, ref: str = "", *, keep_git_dir: bool = False, custom_name: str = "") -> Output:
    """A git source; ``remote`` without scheme as BuildKit spells it (``github.com/x/y.git``) or a URL."""
    identifier = f"git://{remote}" + (f"#{ref}" if ref else "")
    attrs = {"git.fullurl": remote} if "://" in remote else {}
    if keep_git_dir:
        attrs["git.keepgitdir"] = "true"
    return source(identifier, attrs, caps=("source.git",),
                  description={"llb.customname": custom_name} if custom_name else None)


class FileOps:
    """A chain of file actions on ``base``; each action works on the previous one's result.

    ``FileOps(None).mkdir("/a").mkfile("/a/b", b"x").copy(ctx, "/src", "/a/").output()``
    """

    def __init__(self, base: State, *, custom_name: str = "") -> None:
        self._inputs: list[State] = [] if base is None else [base]
        self._actions: list[Any] = []
        self._first_base = -1 if base is None else 0
        self._custom_name = custom_name

    def _input_index(self, state: State) -> int:
        if state is None:
            return UNSET
        for i, existing in enumerate(self._inputs):
            if existing is state:
                return i
        self._inputs.append(state)
        return len(self._inputs) - 1

    def _add(self, action: Any, secondary: int = UNSET) -> FileOps:
        # the first action works on the base; each later one on the previous action's result, which
        # BuildKit numbers "number of inputs + action index" (inputs are only known at the end: fixed up there)
        action.input = self._first_base if not self._actions else -(len(self._actions))  # placeholder
        action.secondaryInput = secondary
        action.output = UNSET
        self._actions.append(action)
        return self

    def mkfile(self, path: str, data: bytes, mode: int = 0o644, timestamp: int = UNSET) -> FileOps:
        return self._add(ops.FileAction(mkfile=ops.FileActionMkFile(path=path, data=data, mode=mode,
                                                                    timestamp=timestamp)))

    def mkdir(self, path: str, mode: int = 0o755, parents: bool = True, timestamp: int = UNSET) -> FileOps:
        return self._add(ops.FileAction(mkdir=ops.FileActionMkDir(path=path, mode=mode, makeParents=parents,
                                                                  timestamp=timestamp)))

    def rm(self, path: str, allow_not_found: bool = True, allow_wildcard: bool = False) -> FileOps:
        return self._add(ops.FileAction(rm=ops.FileActionRm(path=path, allowNotFound=allow_not_found,
                                                            allowWildcard=allow_wildcard)))

    def copy(self, src_state: State, src: str, dest: str, *, mode: int = UNSET, follow_symlink: bool = True,
             dir_copy_contents: bool = True, create_dest_path: bool = True, allow_wildcard: bool = True,
             allow_empty_wildcard: bool = False, include: Sequence[str] = (), exclude: Sequence[str] = (),
             timestamp: int = UNSET) -> FileOps:
        secondary = self._input_index(src_state)
        return self._add(ops.FileAction(copy=ops.FileActionCopy(
            src=src, dest=dest, mode=mode, followSymlink=follow_symlink, dirCopyContents=dir_copy_contents,
            createDestPath=create_dest_path, allowWildcard=allow_wildcard,
            allowEmptyWildcard=allow_empty_wildcard, include_patterns=list(include),
            exclude_patterns=list(exclude), timestamp=timestamp)), secondary)

    def output(self) -> Output:
        if not self._actions:
            raise ValueError("a file op needs at least one action")
        n = len(self._inputs)
        actions = []
        for i, action in enumerate(self._actions):
            a = ops.FileAction()
            a.CopyFrom(action)
            if i > 0:
                a.input = n + i - 1  # the previous action's result
            a.output = 0 if i == len(self._actions) - 1 else UNSET
            actions.append(a)
        op = ops.Op(file=ops.FileOp(actions=actions))
        desc = {"llb.customname": self._custom_name} if self._custom_name else {}
        return Output(Node(op, list(self._inputs), desc, ("file.base",)))


@dataclass
class Mount:
    dest: str
    state: State = None
    selector: str = ""
    readonly: bool = False
    output: bool = False  # whether the mount's result is an output of the op
    cache_id: str = ""
    tmpfs: bool = False


def exec_op(root: State, args: Sequence[str], *, env: Sequence[str] = (), cwd: str = "/", user: str = "",
            mounts: Sequence[Mount] = (), network_none: bool = True, custom_name: str = "",
            platform: Any = None) -> list[Output]:
    """A process on ``root`` (mounted at ``/``, always output 0) with extra ``mounts``; returns the outputs
    in order (root first, then each mount with ``output=True``)."""
    inputs: list[State] = []

    def index(state: State) -> int:
        if state is None:
            return UNSET
        for i, existing in enumerate(inputs):
            if existing is state:
                return i
        inputs.append(state)
        return len(inputs) - 1

    mount_pbs = [ops.Mount(input=index(root), dest="/", output=0)]
    n_out = 1
    caps = ["exec.meta.base", "exec.mount.bind"]
    for m in mounts:
        pbm = ops.Mount(dest=m.dest, selector=m.selector, readonly=m.readonly, output=UNSET, input=UNSET)
        if m.cache_id:
            pbm.mountType = OPS_ENUM_VALUES["MountType"]["CACHE"]
            pbm.cacheOpt.ID = m.cache_id
            caps.append("exec.mount.cache")
        elif m.tmpfs:
            pbm.mountType = OPS_ENUM_VALUES["MountType"]["TMPFS"]
            caps.append("exec.mount.tmpfs")
        else:
            pbm.input = index(m.state)
            if m.selector:
                caps.append("exec.mount.selector")
            if m.output:
                pbm.output = n_out
                n_out += 1
        mount_pbs.append(pbm)
    meta = ops.Meta(args=list(args), env=list(env), cwd=cwd, user=user)
    op = ops.Op(exec=ops.ExecOp(meta=meta, mounts=mount_pbs,
                                network=OPS_ENUM_VALUES["NetMode"]["NONE" if network_none else "UNSET"]))
    if network_none:
        caps.append("exec.meta.network")
    op.platform.CopyFrom(platform or platform_pb())
    node = Node(op, inputs, {"llb.customname": custom_name} if custom_name else {}, tuple(caps))
    return [Output(node, i) for i in range(n_out)]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def marshal(result: State) -> Any:
    """The ``pb.Definition`` of everything ``result`` depends on (scratch: an empty definition)."""
    definition = ops.Definition()
    if result is None:
        return definition
    digests: dict[int, str] = {}

    def visit(node: Node) -> str:
        if id(node) in digests:
            return digests[id(node)]
        op = ops.Op()
        op.CopyFrom(node.op)
        del op.inputs[:]
        for out in node.inputs:
            assert out is not None, "scratch inputs are written as -1, not listed"
            op.inputs.add(digest=visit(out.node), index=out.index)
        data = op.SerializeToString(deterministic=True)
        dgst = digest_of(data)
        digests[id(node)] = dgst
        if dgst not in definition.metadata:
            getattr(definition, "def").append(data)  # "def" is a Python keyword
            meta = definition.metadata[dgst]
            for key, value in node.description.items():
                meta.description[key] = value
            for cap in node.caps:
                meta.caps[cap] = True
            if node.ignore_cache:
                meta.ignore_cache = True
        return dgst

    last = visit(result.node)
    terminal = ops.Op(inputs=[ops.Input(digest=last, index=result.index)])
    getattr(definition, "def").append(terminal.SerializeToString(deterministic=True))
    return definition
