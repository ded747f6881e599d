"""Imported artifacts become ordinary images by building them: a generated Packerfile, a real build.

An importer knows which blobs are which files (the model GGUF, a projector, a chat template, a
license) and what the CMD should be; this module lays those blobs out as a build context (hard
links into a scratch directory of the store, so no bytes are copied to stage them), writes
``FROM scratch`` + one ``COPY`` per file + ``CMD``, and runs the build engine. The image that comes
out has our config fields (``Model``, ``Size``...), ``gguf.model.*`` labels from the GGUF header,
layers and history exactly as if the user had written that Packerfile, and the source artifact's
digest in ``org.opencontainers.image.source``-style labels the importer passes.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ggufpack.errors import GGUFPackError
from ggufpack.progress import Progress
from ggufpack.store import Store


@dataclass(frozen=True)
class ImageFile:
    """A blob of the store that becomes the file ``path`` (absolute, in the image)."""

    path: str
    blob: str  # digest


def _context_name(index: int, path: str) -> str:
    # Context names are ours, not the artifact's: no expansion (``$``) nor glob (``*?[``) characters.
    return re.sub(r"[$*?\[\]\\]", "_", f"f{index:03d}-{posixpath.basename(path) or 'file'}")


def _check_image_path(path: str) -> str:
    clean = posixpath.normpath("/" + path.lstrip("/"))  # POSIX keeps a leading "//"
    if clean == "/" or ".." in path.split("/"):
        raise GGUFPackError(f"the artifact names an unsafe file path {path!r}")
    if "$" in clean or "\n" in clean:
        raise GGUFPackError(f"the artifact names a file path ggufpack cannot represent: {path!r}")
    return clean


def synthesize_image(
    store: Store, files: Sequence[ImageFile], cmd: Sequence[str], labels: Mapping[str, str], ref_name: str,
    progress: Progress,
) -> str:
    """Build an image holding ``files`` with ``cmd`` and ``labels``, tag it ``ref_name``; its digest."""
    from ggufpack.engine import build

    scratch = store.root / "state" / "imports" / uuid.uuid4().hex
    scratch.mkdir(parents=True)
    try:
        lines = ["FROM scratch"]
        for i, item in enumerate(files):
            dest = _check_image_path(item.path)
            name = _context_name(i, dest)
            source = store.blob_path(item.blob)
            try:
                os.link(source, scratch / name)
            except OSError:
                shutil.copyfile(source, scratch / name)
            lines.append("COPY " + json.dumps([name, dest]))
        lines.append("CMD " + json.dumps(list(cmd)))
        (scratch / "GGUFPackerfile").write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = build(scratch, tags=[ref_name], labels=dict(labels), store=store, progress=progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result.descriptor.digest
