"""The model ops: CONVERT (HF checkpoint → GGUF), QUANTIZE and IMATRIX.

Their inputs are files of the stage, of another stage or image (``--from``), or of the context.
Those are handed to the converter or llama.cpp as a directory of symlinks to the store's content
files (or to the context files), so nothing is copied to read it.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ... import __version__
from ...errors import GGUFPackError
from ...packerfile.instructions import ConvertCommand, QuantizeCommand
from ...sources.context import resolve_context_sources
from ..snapshot import FILE_MODE, Diff, FileNode, Snapshot, clean_path
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
        raise GGUFPackError(f"{ctx.where}: /{cleaned} does not exist in the source filesystem")
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
        raise GGUFPackError(f"{ctx.where}: {path} holds no files")
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
        raise GGUFPackError(f"{ctx.where}: {what} must be one file, found a directory of {len(files)} files")
    return files[0]


def output_diff(ctx: OpContext, produced: Path, dest: str, keyword: str) -> Diff:
    """Commit a produced file to the store and place it at ``dest``."""
    size = produced.stat().st_size
    digest = ctx.store.import_file(produced, move=True)
    node = FileNode("file", FILE_MODE, digest=digest, size=size)
    return place([Item(posixpath.basename(clean_path(dest)), node)], dest, ctx.snapshot, many=False,
                 keyword=keyword)


class ConvertOp:
    """CONVERT: our numpy converter (``ggufpack.convert``) on a Hugging Face checkpoint directory."""

    def __init__(self, ctx: OpContext, command: ConvertCommand, source: Snapshot | None) -> None:
        self.ctx, self.command, self.source = ctx, command, source
        self.files = input_files(ctx, source, command.source)
        self.base_files = input_files(ctx, source, command.base) if command.base else []

    def inputs(self) -> dict[str, Any]:
        return {"source": inputs_json(self.files), "base": inputs_json(self.base_files), "converter": __version__}

    def run(self) -> Diff:
        try:
            from ...convert import api
        except ImportError:
            raise GGUFPackError(
                f"{self.ctx.where}: CONVERT is not available in this version of ggufpack (issue #4)"
            ) from None
        src = materialize(self.files, self.ctx.workdir / "convert-src")
        base = materialize(self.base_files, self.ctx.workdir / "convert-base") if self.base_files else None
        out = self.ctx.workdir / "convert-out.gguf"
        # The symlink directory has a scratch name: the model is named after the source directory.
        api.convert(src, out, out_type=self.command.type, model_class=self.command.model_class, base=base,
                    model_name=PurePosixPath(clean_path(self.command.source)).name or None,
                    progress=self.ctx.progress)
        return output_diff(self.ctx, out, self.command.dest, "CONVERT")


class QuantizeOp:
    """QUANTIZE: llama.cpp's quantizer on a GGUF file."""

    def __init__(self, ctx: OpContext, command: QuantizeCommand, source: Snapshot | None) -> None:
        self.ctx, self.command = ctx, command
        self.file = single_file(ctx, input_files(ctx, source, command.source), "the QUANTIZE source")

    def inputs(self) -> dict[str, Any]:
        from ...quantize.inprocess import llama_cpp_version

        return {"source": self.file.node.to_json(), "llama.cpp": llama_cpp_version()}

    def run(self) -> Diff:
        from ...quantize.inprocess import QuantizeOptions, quantize

        c = self.command
        options = QuantizeOptions(
            type=c.type, pure=c.pure, allow_requantize=c.allow_requantize, leave_output_tensor=c.leave_output_tensor,
            output_tensor_type=c.output_tensor_type, token_embedding_type=c.token_embedding_type,
            keep_split=c.keep_split, imatrix=Path(c.imatrix) if c.imatrix else None,
            include_weights=c.include_weights, exclude_weights=c.exclude_weights, tensor_types=c.tensor_types,
            override_kv=c.override_kv,
        )
        out = self.ctx.workdir / "quantize-out.gguf"
        self.ctx.progress.log(f"  quantizing {self.file.relpath} to {c.type}")
        quantize(self.file.location, out, options)
        return output_diff(self.ctx, out, c.dest, "QUANTIZE")
