"""An imported artifact's files committed as an ordinary store image, through :mod:`ggufpack.image`.

An importer knows which blobs are which files (the model GGUF, a projector, a chat template, a
license) and what the CMD should be. Here each blob becomes a runnable file of the store (a hard link
where the filesystem allows: a raw layer is the file itself), each file a layer of its own (as one
``COPY`` per file would make), and the image is committed with our config fields (``Model``,
``Size``...), ``gguf.model.*`` labels from the GGUF header and the labels naming the source artifact.

The history says what happened: a layer's entry is ``COPY ["<content digest>", "<path>"]``, and every
entry's comment is ``ggufpack import <format> <artifact manifest digest>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ggufpack.errors import GGUFPackError, shown
from ggufpack.image.commit import commit_image, commit_layer, history_item
from ggufpack.image.layers import LayerRecords, LayerResult
from ggufpack.image.snapshot import FILE_MODE, FileNode, Snapshot, clean_path, with_parents
from ggufpack.oci.image import source_date_epoch
from ggufpack.oci.platform import DEFAULT_PLATFORM
from ggufpack.packerfile.instructions import cmd_roles
from ggufpack.progress import Progress
from ggufpack.store import Store

FORMAT_LABEL = "io.ggufpack.imported.format"
DIGEST_LABEL = "io.ggufpack.imported.digest"


@dataclass(frozen=True)
class ImageFile:
    """A blob of the store that becomes the file ``path`` (absolute, in the image)."""

    path: str
    blob: str  # digest


def image_path(path: str, ref_name: str) -> str:
    """An artifact's file path as a clean image path (``models/m.gguf``). Refused: ``..`` anywhere (also
    between backslashes, which image paths treat as separators), a NUL byte (a tar name cannot hold
    one), and a path that names the root."""
    parts = path.replace("\\", "/").split("/")
    clean = clean_path(path)
    if ".." in parts or "\0" in path or not clean:
        raise GGUFPackError(f"{ref_name}: the artifact names an unsafe file path {shown(path)}")
    return clean


def commit_files(
    store: Store, files: Sequence[ImageFile], cmd: Sequence[str], labels: Mapping[str, str], ref_name: str,
    progress: Progress, *, kind: str, artifact: str,
) -> str:
    """Commit an image holding ``files`` with ``cmd`` and ``labels``, tagged ``ref_name``; its digest.

    ``kind`` and ``artifact`` (the artifact's format and manifest digest) go to the labels
    :data:`FORMAT_LABEL` and :data:`DIGEST_LABEL` and to the history.
    """
    if not cmd or not cmd[0].startswith("-"):
        raise GGUFPackError(f"{ref_name}: the CMD {shown(list(cmd))} does not start with a llama-server option")
    roles = cmd_roles(list(cmd), lambda message: GGUFPackError(f"{ref_name}: {message}"))
    epoch = source_date_epoch()
    comment = f"ggufpack import {kind} {artifact}"
    records = LayerRecords(store)
    snapshot = Snapshot()
    layers: list[LayerResult] = []
    history = []
    with store.lease():  # from the first blob written to the ref: prune must not collect them
        for item in files:
            path = image_path(item.path, ref_name)
            if snapshot.is_dir(path):
                raise GGUFPackError(f"{ref_name}: the artifact names /{path} both as a file and as a directory")
            digest = store.file_from_blob(item.blob)
            node = FileNode("file", FILE_MODE, digest=digest, size=store.file_path(digest).stat().st_size)
            try:
                diff = with_parents({path: node}, snapshot)
            except GGUFPackError as exc:  # a path below one of its files
                raise GGUFPackError(f"{ref_name}: {exc}") from None
            layer = commit_layer(store, diff, mtime=epoch or 0, progress=progress)
            records.record(layer)  # what FROM, run and export read instead of the tar
            snapshot = snapshot.apply(layer.diff)
            layers.append(layer)
            history.append(history_item(f"COPY {json.dumps([digest, '/' + path])}", source_date_epoch=epoch,
                                        comment=comment))
        history.append(history_item(f"CMD {json.dumps(list(cmd))}", empty_layer=True, source_date_epoch=epoch,
                                    comment=comment))
        image = commit_image(
            store, snapshot=snapshot, layers=layers, history=history, cmd=cmd, roles=roles, labels={},
            extra_labels={**labels, FORMAT_LABEL: kind, DIGEST_LABEL: artifact}, base=None,
            platform=DEFAULT_PLATFORM, source_date_epoch=epoch,
        )
        store.set_ref(ref_name, image.descriptor, files=image.files)
    return image.descriptor.digest
