"""The model ops: CONVERT (HF checkpoint → GGUF), QUANTIZE and IMATRIX.

Their inputs are files of the stage, of another stage or image (``--from``), or of the context.
Those are handed to the converter or llama.cpp as a directory of symlinks to the store's content
files (or to the context files), so nothing is copied to read it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ...errors import GGUFPackError
from ...gguf_info import split_names
from ...image.snapshot import FILE_MODE, Diff, FileNode, Snapshot, clean_path
from ...packerfile.instructions import ConvertCommand, ImatrixCommand, QuantizeCommand
from ...sources.context import resolve_context_sources
from ...util.fingerprint import source_fingerprint
from ...version import __version__
from .base import Item, OpContext, place
from .copy import _context_node


@dataclass(frozen=True)
class InputFile:
    """A file an op reads: its path relative to the named source, its node and where its bytes are."""

    relpath: str
    node: FileNode
    location: Path


def _from_snapshot(ctx: OpContext, snapshot: Snapshot, path: str) -> list[InputFile]:
    cleaned = clean_path(path)
    node = snapshot.get(cleaned) if cleaned else FileNode("dir", 0o755)
    if node is None:
        raise GGUFPackError(f"/{cleaned} does not exist in the source filesystem")
    entries = [("", node)] if node.kind != "dir" else list(snapshot.below(cleaned))
    files = []
    for rel, child in entries:
        if child.kind != "file":
            continue
        assert child.digest is not None
        files.append(InputFile(rel or posixpath.basename(cleaned), child, ctx.store.file_path(child.digest)))
    return files


def _from_context(ctx: OpContext, path: str) -> list[InputFile]:
    (match,) = resolve_context_sources(ctx.context_dir, [path])
    if match.kind == "dir":
        return [
            InputFile(entry.relpath, _context_node(ctx, entry, import_content=False), entry.path)
            for entry in match.contents if entry.kind == "file"
        ]
    return [InputFile(posixpath.basename(match.relpath), _context_node(ctx, match, import_content=False), match.path)]


def input_files(ctx: OpContext, source: Snapshot | None, path: str) -> list[InputFile]:
    """The files under ``path`` in ``source`` (None: the build context)."""
    files = _from_context(ctx, path) if source is None else _from_snapshot(ctx, source, path)
    if not files:
        raise GGUFPackError(f"{path} holds no files")
    return files


def inputs_json(files: list[InputFile]) -> dict[str, Any]:
    return {f.relpath: f.node.to_json() for f in sorted(files, key=lambda f: f.relpath)}


def materialize(files: list[InputFile], directory: Path) -> Path:
    """A directory of symlinks named like the source tree, pointing at the bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = directory / f.relpath
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f.location.resolve(), link)
    return directory


def single_file(ctx: OpContext, files: list[InputFile], what: str) -> InputFile:
    if len(files) != 1:
        raise GGUFPackError(f"{what} must be one file, found a directory of {len(files)} files")
    return files[0]


def output_diff(ctx: OpContext, produced: Path, dest: str, keyword: str) -> Diff:
    """Commit a produced file to the store and place it at ``dest``."""
    size = produced.stat().st_size
    digest = ctx.store.import_file(produced, move=True)
    node = FileNode("file", FILE_MODE, digest=digest, size=size)
    return place([Item(posixpath.basename(clean_path(dest)), node)], dest, ctx.snapshot, many=False,
                 keyword=keyword)


def outputs_diff(ctx: OpContext, written: list[Path], dest: str, keyword: str) -> Diff:
    """Commit produced files: one file goes to ``dest``; split shards (named by llama.cpp's
    ``-NNNNN-of-NNNNN`` rule after ``dest``) go into ``dest``'s directory."""
    if len(written) == 1 and written[0].name == posixpath.basename(clean_path(dest)):
        return output_diff(ctx, written[0], dest, keyword)
    items = []
    for path in written:
        size = path.stat().st_size
        digest = ctx.store.import_file(path, move=True)
        items.append(Item(path.name, FileNode("file", FILE_MODE, digest=digest, size=size)))
    return place(items, f"/{posixpath.dirname(clean_path(dest))}/", ctx.snapshot, many=True, keyword=keyword)


def _converter_package() -> Path:
    """Where ``ggufpack.convert``'s sources are (found without importing it, and so numpy)."""
    spec = importlib.util.find_spec("ggufpack.convert")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


#: the converter's source directory that :func:`converter_fingerprint` hashes
CONVERTER_PACKAGE: Path = _converter_package()
#: what the converter's output depends on besides its own code
CONVERTER_DISTRIBUTIONS = ("gguf", "numpy")


@functools.cache
def converter_fingerprint() -> str:
    """A fingerprint of the converter's code (every source file of ``ggufpack.convert``) and of the
    packages its output depends on, computed once per process: CONVERT's cache key holds it, so a
    converter fix invalidates layers an older converter made."""
    return source_fingerprint(CONVERTER_PACKAGE, CONVERTER_DISTRIBUTIONS)


class ConvertOp:
    """CONVERT: our numpy converter (``ggufpack.convert``) on a Hugging Face checkpoint directory."""

    def __init__(self, ctx: OpContext, command: ConvertCommand, source: Snapshot | None) -> None:
        self.ctx, self.command, self.source = ctx, command, source
        self.files = input_files(ctx, source, command.source)
        base = command.options.base
        self.base_files = input_files(ctx, source, str(base)) if base is not None else []

    def inputs(self) -> dict[str, Any]:
        return {"source": inputs_json(self.files), "base": inputs_json(self.base_files),
                "converter": {"version": __version__, "code": converter_fingerprint()}}

    def run(self) -> Diff:
        try:
            from ...convert import api
        except ImportError:
            raise GGUFPackError("CONVERT is not available in this version of ggufpack (issue #4)") from None
        src = materialize(self.files, self.ctx.workdir / "convert-src")
        base = materialize(self.base_files, self.ctx.workdir / "convert-base") if self.base_files else None
        out = self.ctx.workdir / "convert-out" / posixpath.basename(clean_path(self.command.dest))
        # The symlink directory has a scratch name: the model is named after the source directory.
        options = self.command.options
        # progress and errors name what the Packerfile names, not the scratch directories
        shown_as = {src: self.command.source, out: self.command.dest}
        if base is not None:
            shown_as[base] = str(options.base)
        result = api.convert(src, out, out_type=options.out_type, model_class=options.model_class, base=base,
                             model_name=PurePosixPath(clean_path(self.command.source)).name or None,
                             split_max_size=options.split_max_size, progress=self.ctx.progress,
                             link_roots=(self.ctx.store.root, self.ctx.context_dir),  # where materialize links
                             shown_as=shown_as)
        return outputs_diff(self.ctx, list(result.paths), self.command.dest, "CONVERT")


def _with_shards(ctx: OpContext, source: Snapshot | None, path: str, first: InputFile) -> list[InputFile]:
    """``first`` and, when it is shard 1 of a split GGUF, its sibling shards (llama.cpp finds them by name)."""
    names = split_names(posixpath.basename(path))
    if not names or names[0] != posixpath.basename(path):
        return [first]
    directory = posixpath.dirname(path.rstrip("/"))
    files = [first]
    for name in names[1:]:
        files.append(single_file(ctx, input_files(ctx, source, posixpath.join(directory, name)), f"shard {name}"))
    return files


def aux_file(ctx: OpContext, source: Snapshot | None, path: str, what: str) -> InputFile:
    """A file an op reads beside its main input (QUANTIZE's importance matrix, IMATRIX's calibration text).

    Looked up in the op's source, then in the stage's own filesystem (an IMATRIX earlier in this
    stage, read by a QUANTIZE whose model comes ``--from`` another stage), then in the build context
    (a calibration text or a downloaded imatrix kept beside the Packerfile).
    """
    places: list[Snapshot | None] = [source]
    for extra in (ctx.snapshot, None):
        if all(extra is not p for p in places):
            places.append(extra)
    for place_ in places:
        try:
            return single_file(ctx, input_files(ctx, place_, path), what)
        except GGUFPackError:
            continue
    raise GGUFPackError(f"{what} {path} is neither in the source, in this stage nor in the context")


def _in_image_name(path: str) -> str:
    """How a file is named in what llama.cpp records (relative to the image root, as a tool run there sees it)."""
    return clean_path(path) or path


class QuantizeOp:
    """QUANTIZE: llama.cpp's quantizer on a GGUF file (in-process by default), ``--imatrix`` from the stage."""

    def __init__(self, ctx: OpContext, command: QuantizeCommand, source: Snapshot | None) -> None:
        self.ctx, self.command = ctx, command
        first = single_file(ctx, input_files(ctx, source, command.source), "the QUANTIZE source")
        self.files = _with_shards(ctx, source, command.source, first)
        imatrix = command.options.imatrix
        self.imatrix = aux_file(ctx, source, str(imatrix), "the importance matrix") if imatrix is not None else None

    def inputs(self) -> dict[str, Any]:
        from ...quantize.api import backend_key

        return {
            "source": [f.node.to_json() for f in self.files],
            "imatrix": self.imatrix.node.to_json() if self.imatrix else None,
            "backend": backend_key(self.ctx.backend, "quantize"),
        }

    def run(self) -> Diff:
        from ...quantize.api import quantize_model

        c = self.command
        src = materialize([InputFile(posixpath.basename(f.relpath), f.node, f.location) for f in self.files],
                          self.ctx.workdir / "quantize-src")
        # the imatrix is the file the image path names; llama.cpp records the path in the image
        options = c.options if self.imatrix is None else replace(
            c.options, imatrix=self.imatrix.location, imatrix_name=_in_image_name(str(c.options.imatrix)))
        out = self.ctx.workdir / "quantize-out" / posixpath.basename(clean_path(c.dest))
        self.ctx.progress.log(f"  quantizing {self.files[0].relpath} to {options.type}")
        written = quantize_model(src / posixpath.basename(self.files[0].relpath), out, options,
                                 backend=self.ctx.backend, progress=self.ctx.progress)
        # --keep-split: llama.cpp names the shards after dest; they go into dest's directory
        return outputs_diff(self.ctx, list(written), c.dest, "QUANTIZE")


class ImatrixOp:
    """IMATRIX: an importance matrix of a GGUF model over a calibration text (GGUF imatrix format)."""

    def __init__(self, ctx: OpContext, command: ImatrixCommand, source: Snapshot | None) -> None:
        self.ctx, self.command = ctx, command
        self.model = single_file(ctx, input_files(ctx, source, command.model), "the IMATRIX model")
        self.calibration = aux_file(ctx, source, command.calibration, "the calibration text")

    def inputs(self) -> dict[str, Any]:
        from ...quantize.api import backend_key

        return {
            "model": self.model.node.to_json(), "calibration": self.calibration.node.to_json(),
            "backend": backend_key(self.ctx.backend, "imatrix"),
        }

    def run(self) -> Diff:
        from ...quantize.api import make_imatrix
        from ...quantize.imatrix import DEFAULT_CTX_SIZE, ImatrixOptions

        c = self.command
        options = ImatrixOptions(chunks=c.chunks, ctx_size=c.ctx_size or DEFAULT_CTX_SIZE,
                                 dataset_name=_in_image_name(c.calibration))
        out = self.ctx.workdir / "imatrix-out.gguf"
        self.ctx.progress.log(f"  computing the importance matrix of {self.model.relpath}")
        make_imatrix(self.model.location, self.calibration.location, out, options, backend=self.ctx.backend,
                     progress=self.ctx.progress)
        return output_diff(self.ctx, out, c.dest, "IMATRIX")
