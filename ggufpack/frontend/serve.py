"""``ggufpack frontend serve``: the BuildKit frontend. The Packerfile planned by :mod:`ggufpack.plan` (the
same plan a local build runs), each stage translated to LLB, solved, and the image config a local build
would write returned with the result.

Translation (one FileOp or ExecOp + FileOp per layer-making instruction, so one layer each, as locally):

- ``FROM scratch`` → scratch; ``FROM <stage>`` → that stage's state (its labels, CMD and history too);
  ``FROM <image>`` → an image source pinned to the digest ``ResolveImageConfig`` gives, its config's CMD,
  labels and history inherited as :mod:`ggufpack.image.load` does locally (``COPY --from=<image>`` alike).
- ``COPY``/``ADD`` of context paths → FileOp copy from the ``context`` local source, filtered by include
  patterns for exactly the paths the Packerfile reads; ``--from=<stage>`` → copy from that stage's state;
  ``ADD <http(s) url>`` → an http source (``--checksum`` → ``http.checksum``) copied into place.
- ``CAT`` → FileOp mkdir (parents) + mkfile.
- ``CONVERT``/``QUANTIZE``/``IMATRIX`` → an ExecOp in the frontend's own image running
  ``python3 -m ggufpack.frontend.run_op`` (ggufpack's own converter and quantizer) with the inputs mounted
  read-only (``/ctx`` the context, ``/src`` the ``--from`` stage, ``/cur`` the stage itself) and the
  result on a scratch mount ``/out``, network none; then a FileOp copies ``/out`` into the stage.
- ``LABEL``/``CMD`` → the returned config.

Independent stages are independent subgraphs of the one definition solved at the end, so BuildKit runs
them in parallel. The config's gguf-packer fields come from the GGUF headers of the files CMD names,
read with ranged ``ReadFile`` calls on the solved result (:class:`GatewayFile`), never whole files.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import sys
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..image.load import ConfiguredImage
from ..oci.reader import ImageConfig
from . import llb
from .gateway import LLBBridge, frontend_options, log

#: tried in order when BuildKit passes no ``filename`` option (a plain ``docker build`` passes none)
DEFAULT_FILENAMES = ("GGUFPackerfile", "Dockerfile")
RUN_OP_MODULE = "ggufpack.frontend.run_op"
#: build args BuildKit itself consumes: not the Packerfile's
_BUILDKIT_ARGS = ("BUILDKIT_",)


class GatewayFile(io.RawIOBase):
    """A read-only, seekable file over ``ReadFile`` with ranges on a solved ref (for the GGUF header reader)."""

    def __init__(self, bridge: LLBBridge, ref: str, path: str, size: int) -> None:
        super().__init__()
        self.bridge, self.ref, self.path, self.size = bridge, ref, path, size
        self.pos = 0
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        if n <= 0:
            return b""
        data = self.bridge.read_file(self.ref, self.path, self.pos, n)
        self.pos += len(data)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass
class StageState:
    """A stage after its last instruction, as LLB: the filesystem and the config inputs."""

    fs: llb.State = None
    labels: dict[str, str] = field(default_factory=dict)
    cmd: list[str] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    #: the image the stage starts from (through ``FROM <stage>`` too), for the base labels
    base_image: ResolvedImage | None = None

    def copy(self) -> StageState:
        return StageState(self.fs, dict(self.labels), list(self.cmd) if self.cmd is not None else None,
                          list(self.history), self.base_image)


@dataclass
class ResolvedImage(ConfiguredImage):
    """An image resolved by BuildKit (``ResolveImageConfig``): what a local build reads of a base image
    (:class:`ggufpack.image.load.BaseImage`: ``name``, ``digest``, ``labels``, ``cmd``, ``history``) and
    its LLB source, pinned to the resolved digest."""

    name: str
    digest: str
    config: ImageConfig
    fs: llb.Output


def _abs(path: str) -> str:
    from ..image.snapshot import clean_path

    return "/" + clean_path(path)


def _parent_dir(dest: str) -> str:
    return posixpath.dirname(_abs(dest)) or "/"


def _context_patterns(path: str) -> list[str]:
    """Include patterns that bring ``path`` (a file, a directory or a glob) from the client's context."""
    from ..image.snapshot import clean_path

    cleaned = clean_path(path)
    if not cleaned:
        return ["**"]
    return [cleaned, f"{cleaned}/**"]


class Translator:
    """The plan as LLB, for one build: ``session`` is BuildKit's session id (local sources come through it)."""

    def __init__(self, plan: Any, *, frontend_image: str, session: str, packerfile: str, filename: str,
                 build_args: Mapping[str, str], target: str | None, source_date_epoch: int | None) -> None:
        self.plan = plan
        self.frontend_image = frontend_image
        self.session = session
        self.packerfile = packerfile
        self.filename = filename
        self.build_args = dict(build_args)
        self.target = target
        self.source_date_epoch = source_date_epoch
        self.timestamp = source_date_epoch or 0  # the local build's tar mtime
        self.results: dict[int, StageState] = {}
        self._context: llb.Output | None = None
        self._runner: llb.Output | None = None
        self._images: dict[str, ResolvedImage] = {}
        #: ``(text BuildKit's error quotes, instruction)``: a failed solve named back to its Packerfile line
        self.sites: list[tuple[str, Any]] = []
        #: ``ref -> (digest, config dict)``: BuildKit's ``ResolveImageConfig`` (set by :func:`main`)
        self.resolve_image: Any = None

    def image(self, ref: str) -> ResolvedImage:
        """A base or ``--from`` image: its config resolved through the gateway, its source pinned to the digest."""
        from ..errors import GGUFPackError
        from ..oci.platform import parse_platform
        from ..oci.reader import ImageConfig

        if ref not in self._images:
            if self.resolve_image is None:
                raise GGUFPackError(f"image {ref}: no image resolver (the frontend resolves images through BuildKit)")
            target = parse_platform(self.plan.platform)
            platform = llb.platform_pb(target["os"], target["architecture"], target.get("variant", ""))
            digest, raw = self.resolve_image(ref, platform)
            config = ImageConfig.parse(raw, f"image {ref}")
            pinned = ref.split("@", 1)[0] + (f"@{digest}" if digest else "")
            self._images[ref] = ResolvedImage(ref, digest, config,
                                              llb.image(pinned, platform=platform, name=f"[ggufpack] FROM {ref}"))
        return self._images[ref]

    # -- sources ---------------------------------------------------------------------------------

    def context_paths(self) -> list[str]:
        """Every context path the needed stages read (the include patterns of the one context source)."""
        from ..packerfile import instructions as ins
        from ..sources import git, http

        paths: list[str] = []
        for index in self.plan.order:
            stage = self.plan.stages[index]
            for op in stage.ops:
                c = op.command
                if op.source is not None and op.source.kind != "context":
                    continue
                if isinstance(c, ins.CopyCommand | ins.AddCommand):
                    paths += [s for s in c.sources if not (http.is_url(s) or git.is_git_source(s))]
                elif isinstance(c, ins.ConvertCommand) and op.source is not None:
                    paths.append(c.source)
                    if c.options.base is not None:
                        paths.append(str(c.options.base))
                elif isinstance(c, ins.QuantizeCommand) and c.options.imatrix is not None:
                    paths.append(str(c.options.imatrix))
                elif isinstance(c, ins.ImatrixCommand):
                    paths.append(c.calibration)
        return paths

    def context(self) -> llb.Output:
        if self._context is None:
            include: list[str] = []
            for path in self.context_paths():
                include += [p for p in _context_patterns(path) if p not in include]
            self._context = llb.local("context", session_id=self.session, include=include or ["**"],
                                      shared_key="context", custom_name="[ggufpack] load build context")
        return self._context

    def download(self, url: str, command: Any) -> llb.Output:
        """``ADD <url>``: an LLB http source; BuildKit checks the checksum (sha256 only) before anything uses it."""
        from ..errors import GGUFPackError
        from ..options.checksum import parse_checksum

        checksum = command.checksum
        digest = ""
        self.sites.append((url, command))
        if checksum:
            algo, hexdigest = parse_checksum(checksum)
            if algo != "sha256":
                raise GGUFPackError(f"--checksum={checksum}: BuildKit verifies sha256 digests only")
            digest = f"sha256:{hexdigest}"
            self.sites.append((digest, command))  # BuildKit's "digest mismatch ACTUAL: EXPECTED" names no URL
        return llb.http(url, checksum=digest, custom_name=f"[ggufpack] download {url}")

    def runner(self) -> llb.Output:
        if self._runner is None:
            self._runner = llb.image(self.frontend_image, name="[ggufpack] frontend image (converter, llama.cpp)")
        return self._runner

    # -- stages ----------------------------------------------------------------------------------

    def history(self, command: Any, *, empty_layer: bool) -> dict[str, Any]:
        from ..engine.executor import created_by
        from ..image.commit import history_item

        return history_item(created_by(command), empty_layer=empty_layer, source_date_epoch=self.source_date_epoch)

    def translate(self) -> StageState:
        for index in self.plan.order:
            self.results[index] = self.stage(self.plan.stages[index])
        return self.results[self.plan.target]

    def stage(self, stage: Any) -> StageState:
        from ..errors import GGUFPackError, located

        base = stage.base
        if base.kind == "stage":
            state = self.results[base.stage].copy()
        elif base.kind == "scratch":
            state = StageState()
        elif base.kind == "image":
            with located(stage.position):
                image = self.image(base.image)
            state = StageState(image.fs, image.labels, image.cmd, image.history, image)
        else:
            with located(stage.position):
                raise GGUFPackError(f"FROM {base.kind}: not supported by the BuildKit frontend")
        for index, op in enumerate(stage.ops):
            with located(op.command.position):
                self.op(stage, index, op, state)
        return state

    def _source_state(self, op: Any, state: StageState) -> tuple[str, llb.State]:
        """Where an instruction reads: ``("context", ...)``, ``("stage", fs)``."""
        from ..errors import GGUFPackError
        from ..packerfile import instructions as ins

        if op.source is None:
            if ins.definition_of(op.command).reads == "stage":
                return "stage", state.fs
            return "context", self.context()
        if op.source.kind == "context":
            return "context", self.context()
        if op.source.kind == "stage":
            return "stage", self.results[op.source.stage].fs
        if op.source.kind == "image":
            return "stage", self.image(op.source.image).fs
        raise GGUFPackError(f"--from={op.source.kind}: not supported by the BuildKit frontend")

    def op(self, stage: Any, index: int, op: Any, state: StageState) -> None:
        from ..errors import GGUFPackError
        from ..packerfile import instructions as ins

        c = op.command
        name = f"[{stage.label} {index + 1}/{len(stage.ops)}] {' '.join(c.original.split(chr(10), 1)[0].split())}"
        if not c.makes_layer:
            if isinstance(c, ins.LabelCommand):
                state.labels.update(c.labels)
            elif isinstance(c, ins.CmdCommand):
                state.cmd = list(c.args)
            state.history.append(self.history(c, empty_layer=True))
            return
        ts = self.timestamp
        if isinstance(c, ins.CatCommand):
            if c.chown is not None:
                raise GGUFPackError("CAT --chown is not yet supported by the BuildKit frontend")
            mode = int(c.chmod, 8) if c.chmod is not None else 0o644
            fo = llb.FileOps(state.fs, custom_name=name)
            parent = _parent_dir(c.dest)
            if parent != "/":
                fo.mkdir(parent, timestamp=ts)
            state.fs = fo.mkfile(_abs(c.dest), c.content.encode("utf-8"), mode=mode, timestamp=ts).output()
        elif isinstance(c, ins.CopyCommand | ins.AddCommand):
            if c.chown is not None or c.contents or c.link or getattr(c, "parents", False):
                raise GGUFPackError(f"{c.keyword} with --chown, --link, --parents or heredoc files is not yet "
                                    "supported by the BuildKit frontend")
            from ..sources import git, http

            urls = [s for s in c.sources if isinstance(c, ins.AddCommand) and http.is_url(s)
                    and not git.is_git_source(s)]
            if isinstance(c, ins.AddCommand) and any(git.is_git_source(s) for s in c.sources):
                raise GGUFPackError("ADD of git repositories is not yet supported by the BuildKit frontend")
            paths = [s for s in c.sources if s not in urls]
            _, src_fs = self._source_state(op, state) if paths else ("context", None)
            mode = int(c.chmod, 8) if c.chmod is not None else llb.UNSET
            dest = c.dest if c.dest.startswith("/") else "/" + c.dest
            fo = llb.FileOps(state.fs, custom_name=name)
            for src in paths:
                fo.copy(src_fs, _abs(src), dest, mode=mode, exclude=list(c.excludes), timestamp=ts)
            for url in urls:
                # BuildKit's http source: one file (named as the local download names it: Content-Disposition,
                # else the URL's last component), 0600 as locally, verified against --checksum by BuildKit
                fo.copy(self.download(url, c), "/*", dest, mode=mode, timestamp=ts)
            state.fs = fo.output()
        elif isinstance(c, ins.ConvertCommand | ins.QuantizeCommand | ins.ImatrixCommand):
            state.fs = self.model_op(stage, index, op, state, name)
        else:
            raise GGUFPackError(f"{c.keyword} is not yet supported by the BuildKit frontend")
        state.history.append(self.history(c, empty_layer=False))

    def model_op(self, stage: Any, index: int, op: Any, state: StageState, name: str) -> llb.Output:
        """CONVERT/QUANTIZE/IMATRIX: run_op in the frontend image, inputs read-only, result copied into the stage."""
        kind, src_fs = self._source_state(op, state)
        from .run_op import op_spec

        # only the op's own expanded arguments: another line of the Packerfile edited keeps this op cached
        spec = op_spec(op.command, source=kind, from_stage=op.source is not None)
        mounts = [llb.Mount("/ctx", self.context(), readonly=True)] if self._needs_context(op) else []
        if kind == "stage" and op.source is not None and src_fs is not None:
            mounts.append(llb.Mount("/src", src_fs, readonly=True))
        if state.fs is not None:
            mounts.append(llb.Mount("/cur", state.fs, readonly=True))
        mounts.append(llb.Mount("/out", None, output=True))
        argument = json.dumps(spec, sort_keys=True)
        self.sites.append((argument, op.command))
        outputs = llb.exec_op(self.runner(), ["python3", "-m", RUN_OP_MODULE, argument],
                              env=["PYTHONPATH=/opt/ggufpack/site:/opt/ggufpack/app", "PYTHONDONTWRITEBYTECODE=1",
                                   "PYTHONUNBUFFERED=1", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"],
                              mounts=mounts, custom_name=name)
        out = outputs[-1]
        parent = _parent_dir(op.command.dest)
        return (llb.FileOps(state.fs, custom_name=f"{name} (into the stage)")
                .copy(out, "/", parent + ("/" if parent != "/" else ""), timestamp=self.timestamp).output())

    def solve(self, bridge: LLBBridge, state: StageState) -> str:
        """Solve the target stage now (so an op's failure is a Packerfile error, not a missing file later),
        a failure reported at the line of the instruction BuildKit's message names."""
        from ..errors import GGUFPackError
        from .gateway import GatewayError

        try:
            return bridge.solve(llb.marshal(state.fs), evaluate=True)
        except GatewayError as exc:
            detail = str(exc).removeprefix("Solve: ")
            for needle, command in self.sites:
                if needle in detail:
                    what = f"{command.keyword} failed on BuildKit"
                    model_op = command.keyword in ("CONVERT", "QUANTIZE", "IMATRIX")
                    brief = detail.replace(needle, "…") if model_op else detail  # the JSON spec is noise
                    if model_op:
                        what += " (its own error is in the step's log above)"
                    raise GGUFPackError(f"{what}: {brief}").with_location(command.position) from None
            raise GGUFPackError(f"the BuildKit solve failed: {detail}") from None

    def _needs_context(self, op: Any) -> bool:
        from ..packerfile import instructions as ins

        c = op.command
        if op.source is not None and op.source.kind == "context":
            return True
        if op.source is None and ins.definition_of(c).reads == "context":
            return True
        # an imatrix or a calibration text may come from the context (as the local engine looks there last)
        return (isinstance(c, ins.QuantizeCommand) and c.options.imatrix is not None) or isinstance(
            c, ins.ImatrixCommand)


def _read_headers(bridge: LLBBridge, ref: str, path: str) -> tuple[list[Any], int]:
    """The GGUF header(s) of ``path`` in the solved ``ref`` (every shard of a split set) and their bytes."""
    from ..gguf_info import split_names
    from ..gguf_info.header import check_tensor_data, read_header

    headers, total = [], 0
    for shard in split_names(path) or [path]:
        stat = bridge.stat_file(ref, shard)
        f = GatewayFile(bridge, ref, shard, stat.size)
        header = read_header(f)  # type: ignore[arg-type]
        check_tensor_data(header)
        log(f"read the header of {shard}: {f.bytes_read} of {stat.size} bytes")
        headers.append(header)
        total += stat.size
    return headers, total


def image_config(bridge: LLBBridge, ref: str, state: StageState, plan: Any, source_date_epoch: int | None,
                 extra_labels: Mapping[str, str]) -> dict[str, Any]:
    """What :func:`ggufpack.image.commit.commit_image` writes into the config, from ranged reads of ``ref``."""
    from ..errors import GGUFPackError
    from ..gguf_info import model_labels
    from ..image.commit import CmdError, check_system_prompt, inherited_labels, model_fields
    from ..oci.image import build_image_config, rfc3339
    from ..oci.platform import parse_platform
    from ..packerfile.instructions import cmd_roles

    cmd = state.cmd
    cmd_command = plan.cmd.command
    try:
        if not cmd:
            raise GGUFPackError('the image has no CMD: add CMD ["-m", "<model>.gguf", ...] to the final stage')
        roles = cmd_roles(cmd, lambda message: GGUFPackError(message))

        def headers_of(role: Any) -> tuple[list[Any], int]:
            try:
                return _read_headers(bridge, ref, _abs(role.value))
            except GGUFPackError as exc:
                raise CmdError(f"CMD names {role.value}, which is not a readable GGUF file: {exc}",
                               role.index) from None
            except Exception as exc:  # the gateway: no such file
                raise CmdError(f"CMD names {role.value}, but the image has no such file ({exc})", role.index) from None

        models, model_headers = model_fields(roles, headers_of)
        fields: dict[str, Any] = {"Cmd": list(cmd), **models}
        user_labels = {**inherited_labels(state.labels, state.base_image),  # type: ignore[arg-type]
                       **extra_labels}
        if state.base_image is not None:
            user_labels.setdefault("org.opencontainers.image.base.name", state.base_image.name)
            user_labels.setdefault("org.opencontainers.image.base.digest", state.base_image.digest)
        fields["Labels"] = model_labels(model_headers, user_labels=user_labels)
        check_system_prompt(cmd, model_headers[0])
    except CmdError as exc:
        if cmd_command is not None and cmd == list(cmd_command.args):
            exc.with_location(cmd_command.position_of(exc.index))
        raise
    target = parse_platform(plan.platform)
    # the exporter fills rootfs.diff_ids from the layers BuildKit made (one per layer entry of the history)
    layered = sum(1 for h in state.history if not h.get("empty_layer"))
    config = build_image_config(architecture=target["architecture"], os=target["os"],
                                diff_ids=["sha256:" + "0" * 64] * layered, history=state.history, config=fields,
                                created=rfc3339(source_date_epoch) if source_date_epoch is not None else None)
    config["rootfs"]["diff_ids"] = []
    if "variant" in target:
        config["variant"] = target["variant"]
    return config


def read_packerfile(bridge: LLBBridge, options: Mapping[str, str], session: str) -> tuple[str, str]:
    """The Packerfile's name and text, from the ``dockerfile`` local source."""
    from ..errors import UsageError

    wanted = [options["filename"]] if options.get("filename") else list(DEFAULT_FILENAMES)
    src = llb.local("dockerfile", session_id=session, include=wanted, shared_key="dockerfile",
                    custom_name="[ggufpack] load Packerfile")
    ref = bridge.solve(llb.marshal(src))
    present = {posixpath.basename(e.path) for e in bridge.read_dir(ref, "/")}
    for name in wanted:
        if posixpath.basename(name) in present:
            data = bridge.read_file(ref, posixpath.basename(name))
            return posixpath.basename(name), data.decode("utf-8", "surrogateescape")
    raise UsageError(f"no Packerfile in the build: looked for {', '.join(wanted)}")


def labels_of(options: Mapping[str, str]) -> dict[str, str]:
    """``docker build --label K=V`` (``label:K`` options): the labels ``ggufpack build --label`` adds locally."""
    return {k.removeprefix("label:"): v for k, v in options.items() if k.startswith("label:")}


def build_args_of(options: Mapping[str, str]) -> dict[str, str]:
    return {k.removeprefix("build-arg:"): v for k, v in options.items()
            if k.startswith("build-arg:") and not k.removeprefix("build-arg:").startswith(_BUILDKIT_ARGS)}


def plan_text(text: str, filename: str, build_args: Mapping[str, str], target: str | None) -> Any:
    """The plan of a Packerfile given as text (read from a private temporary file, named ``filename``)."""
    from ..plan import plan_file

    with tempfile.TemporaryDirectory(prefix="ggufpack-frontend-") as tmp:
        path = os.path.join(tmp, "Packerfile")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
        return plan_file(__import__("pathlib").Path(path), display_name=filename, build_args=build_args,
                         target=target or None)


def main(argv: list[str] | None = None) -> int:
    options = frontend_options()
    bridge = LLBBridge()
    try:
        bridge.ping()
        session = os.environ.get("BUILDKIT_SESSION_ID", "")
        filename, text = read_packerfile(bridge, options, session)
        build_args = build_args_of(options)
        target = options.get("target") or None
        plan = plan_text(text, filename, build_args, target)
        epoch_text = build_args.get("SOURCE_DATE_EPOCH") or ""
        epoch = int(epoch_text) if epoch_text.isdigit() else None
        translator = Translator(plan, frontend_image=options.get("source", ""), session=session, packerfile=text,
                                filename=filename, build_args=build_args, target=target, source_date_epoch=epoch)
        translator.resolve_image = lambda ref, platform: bridge.resolve_image_config(
            ref, platform=platform, resolve_mode=options.get("image-resolve-mode", "default"), log_name=f"FROM {ref}")
        state = translator.translate()
        ref = translator.solve(bridge, state)
        config = image_config(bridge, ref, state, plan, epoch, labels_of(options))
        bridge.return_result(ref, {"containerimage.config": json.dumps(config, sort_keys=True).encode()})
        return 0
    except Exception as e:
        from ..errors import GGUFPackError

        if not isinstance(e, GGUFPackError):
            traceback.print_exc()
        message = str(e) if isinstance(e, GGUFPackError) else f"ggufpack frontend: {type(e).__name__}: {e}"
        log("error:", message)
        return bridge.fail(message)
    finally:
        bridge.close()


if __name__ == "__main__":
    sys.exit(main())
