"""Runs a plan: stages in dependency order (independent ones at once), ops through the build cache.

Each layer-making op gets a cache key from the state it runs on (the chain key), its instruction,
its expanded arguments and the digests of what it reads. On a hit the recorded layer is reused and
nothing runs; on a miss the op runs, its layer is written and the result recorded.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ..errors import NO_SPACE_ERRNOS, DiskFullError, SourcePosition, located
from ..image.commit import commit_layer, history_item
from ..image.layers import LayerResult
from ..image.load import BaseImage, load_image
from ..image.snapshot import Diff, Snapshot, with_parents
from ..packerfile import instructions as ins
from ..plan.graph import Op, Plan, SourceRef, Stage
from ..progress import Progress
from ..sources.context import FileHashCache
from ..store import Store
from ..util.locking import try_lock
from .cache import BuildCache, cache_key
from .ops.base import OpContext
from .ops.registry import op_class

MAX_PARALLEL_STAGES = 2


class LayerOp(Protocol):
    def inputs(self) -> dict[str, Any]: ...

    def run(self) -> Diff: ...


@dataclass
class StageResult:
    """A stage's state after its last instruction."""

    snapshot: Snapshot
    layers: list[LayerResult] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    cmd: list[str] | None = None
    chain_key: str = ""
    base_image: BaseImage | None = None

    def copy(self) -> StageResult:
        return replace(self, layers=list(self.layers), history=list(self.history), labels=dict(self.labels),
                       cmd=list(self.cmd) if self.cmd is not None else None)


@dataclass
class BuildOptions:
    no_cache: bool = False
    progress: Progress = field(default_factory=lambda: Progress("quiet"))
    source_date_epoch: int | None = None
    #: pulls a registry image that ``FROM``/``COPY --from`` names and the store lacks
    fetch_image: Callable[[str], None] | None = None
    #: the llama.cpp backend of QUANTIZE and IMATRIX (None: in-process)
    backend: str | None = None


@dataclass
class BuildStats:
    ops_run: int = 0
    ops_cached: int = 0
    run_ops: list[str] = field(default_factory=list)


@contextmanager
def _located_at(position: SourcePosition) -> Iterator[None]:
    """Errors of the block carry ``position``: a :class:`GGUFPackError` gets it attached (once), and a
    full disk, which the store's writers do not all turn into one, becomes a located :class:`DiskFullError`."""
    try:
        with located(position):
            yield
    except OSError as exc:
        if exc.errno not in NO_SPACE_ERRNOS:
            raise
        raise DiskFullError.from_os_error(exc).with_location(position) from exc


def created_by(command: ins.Command) -> str:
    """The history text of an instruction: its logical line, continuations joined, heredoc bodies left out."""
    text = re.sub(r"[ \t]*\\\r?\n[ \t]*", " ", command.original)
    return " ".join(text.split("\n", 1)[0].split())


class Executor:
    def __init__(self, store: Store, plan: Plan, context_dir: Path, options: BuildOptions) -> None:
        self.store = store
        self.cache = BuildCache(store)
        self.plan = plan
        self.context_dir = context_dir
        self.options = options
        self.hash_cache = FileHashCache(store.cache_dir)
        self.results: dict[int, StageResult] = {}
        self.stats = BuildStats()
        self._lock = threading.Lock()
        self._step = 0
        self._images: dict[str, BaseImage] = {}
        self._image_locks: dict[str, threading.Lock] = {}
        self.workdir = store.layout.ingest / f"build-{uuid.uuid4().hex}"

    @property
    def mtime(self) -> int:
        return self.options.source_date_epoch or 0

    def run(self) -> StageResult:
        """Execute the plan; returns the target stage's state."""
        self.workdir.mkdir(parents=True)
        # Held while the directory lives: prune removes only scratch directories nobody holds
        # (those of killed builds).
        fd = os.open(self.workdir, os.O_RDONLY | os.O_CLOEXEC)
        try:
            try_lock(fd)
            self._run_stages()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            os.close(fd)
        return self.results[self.plan.target]

    def _run_stages(self) -> None:
        pending = list(self.plan.order)
        running: dict[Future[None], int] = {}
        with ThreadPoolExecutor(max_workers=MAX_PARALLEL_STAGES) as pool:
            while pending or running:
                ready = [i for i in pending if all(d in self.results for d in self.plan.stages[i].depends_on)]
                for index in ready:
                    pending.remove(index)
                    running[pool.submit(self._run_stage, self.plan.stages[index])] = index
                if not running:
                    raise AssertionError("plan order has an unsatisfiable stage")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    del running[future]
                    future.result()  # re-raise the first failure; the pool waits for the rest

    # -- stages ------------------------------------------------------------------------------------

    def image(self, ref: str) -> BaseImage:
        """The image ``ref``, loaded (and pulled, when the store lacks it) once per build.

        The pull runs under a lock of its own ref only, never under ``_lock``: the other stages'
        progress lines and stats go on while one stage downloads its base, and a second stage
        naming the same ref waits for the first one's pull instead of starting another (a failed
        load is not kept: the next stage to ask tries again).
        """
        with self._lock:
            if ref in self._images:
                return self._images[ref]
            ref_lock = self._image_locks.setdefault(ref, threading.Lock())
        with ref_lock:
            with self._lock:
                image = self._images.get(ref)
            if image is None:
                image = load_image(self.store, ref, self.plan.platform, fetch=self.options.fetch_image)
                with self._lock:
                    self._images[ref] = image
            return image

    def _base_state(self, stage: Stage) -> StageResult:
        base = stage.base
        if base.kind == "stage":
            assert base.stage is not None
            return self.results[base.stage].copy()
        if base.kind == "image":
            assert base.image is not None
            image = self.image(base.image)
            return StageResult(
                snapshot=image.snapshot, layers=list(image.layers), history=list(image.history),
                labels=dict(image.labels), cmd=image.cmd, chain_key=image.digest, base_image=image,
            )
        return StageResult(snapshot=Snapshot(), chain_key=cache_key({"base": "scratch"}))

    def _read_source(self, ref: SourceRef) -> Snapshot:
        if ref.kind == "stage":
            assert ref.stage is not None
            return self.results[ref.stage].snapshot
        assert ref.kind == "image" and ref.image is not None
        return self.image(ref.image).snapshot

    def _run_stage(self, stage: Stage) -> None:
        with _located_at(stage.position):  # the FROM line: loading or pulling the base image
            state = self._base_state(stage)
        for index, op in enumerate(stage.ops):
            with _located_at(op.command.position):
                self._run_op(stage, index, op, state)
        with self._lock:
            self.results[stage.index] = state

    def _log(self, stage: Stage, index: int, text: str, status: str) -> None:
        with self._lock:
            self._step += 1
            step = self._step
        self.options.progress.log(f"#{step} [{stage.label} {index + 1}/{len(stage.ops)}] {text} {status}".rstrip())

    def _run_op(self, stage: Stage, index: int, op: Op, state: StageResult) -> None:
        command = op.command
        text = created_by(command)
        if not command.makes_layer:  # ARG (the plan's alone), LABEL and CMD (the image config's)
            if ins.definition_of(command).op is not None:
                op_class(command.keyword)(command).apply(state)
            state.history.append(self._history(text, empty_layer=True))
            return
        started = time.monotonic()
        ctx = OpContext(
            store=self.store, context_dir=self.context_dir, hash_cache=self.hash_cache, snapshot=state.snapshot,
            read_source=self._read_source, progress=self.options.progress,
            workdir=self.workdir / f"{stage.index}.{index}", backend=self.options.backend,
        )
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        layer_op = self._make_op(ctx, op)
        arguments = {k: v for k, v in command.arguments().items() if k != "from"}
        key = cache_key({
            "chain": state.chain_key, "instruction": command.keyword, "args": arguments, "inputs": layer_op.inputs(),
            # the layer's tar mtimes follow SOURCE_DATE_EPOCH: a layer made under another epoch differs
            "mtime": self.mtime,
        })
        result = None if self.options.no_cache else self.cache.lookup(key)
        if result is not None:
            self._log(stage, index, text, "CACHED")
            with self._lock:
                self.stats.ops_cached += 1
        else:
            self._log(stage, index, text, "")
            diff = with_parents(layer_op.run(), state.snapshot)
            result = commit_layer(self.store, diff, mtime=self.mtime, progress=self.options.progress)
            self.cache.record(key, result)
            with self._lock:
                self.stats.ops_run += 1
                self.stats.run_ops.append(f"{stage.label}:{command.keyword}:{command.position.line}")
            self.options.progress.log(f"  done in {time.monotonic() - started:.1f}s")
        state.snapshot = state.snapshot.apply(result.diff)
        state.layers.append(result)
        state.history.append(self._history(text, empty_layer=False))
        state.chain_key = key

    def _make_op(self, ctx: OpContext, op: Op) -> LayerOp:
        command = op.command
        source: Snapshot | None
        if op.source is None:
            source = ctx.snapshot if ins.definition_of(command).reads == "stage" else None
        elif op.source.kind == "context":
            source = None
        else:
            source = self._read_source(op.source)
        layer_op: LayerOp = op_class(command.keyword)(ctx, command, source)  # named by the definition
        return layer_op

    def _history(self, text: str, *, empty_layer: bool) -> dict[str, Any]:
        return history_item(text, empty_layer=empty_layer, source_date_epoch=self.options.source_date_epoch)
