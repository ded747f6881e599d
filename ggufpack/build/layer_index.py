"""What a layer blob that came from elsewhere (a pull) holds, recorded as if a build had made it.

A build records, for every layer it writes, the nodes it put in it (a :class:`LayerResult`), and
keeps each file's bytes under ``files/`` so that llama.cpp can load a GGUF in place and ``FROM``
can reuse a layer without unpacking it. A pulled layer gets the same treatment here: every
regular file becomes a store file (for an uncompressed tar, a byte range of the blob, which shares
extents where the filesystem can), and its record goes to the build cache.

Whiteouts are refused: a model image adds files, and an image that deletes lower files is not one
ggufpack can build on or run.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from ..errors import GGUFPackError
from ..oci import mediatypes as mt
from ..oci.descriptor import Descriptor
from ..oci.extract import iter_layer_members
from ..store import Store
from ..store.ingest import IngestWriter
from .cache import BuildCache, LayerResult
from .snapshot import Diff, FileNode

_COPY = 8 * 1024 * 1024


class _HashingReader:
    """Hashes the decompressed tar stream as ``tarfile`` reads it: that hash is the layer's diff_id."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_COPY):
            pass


def _copy_to_files(store: Store, content: BinaryIO) -> str:
    writer = IngestWriter(store.layout.ingest, store.layout.files)
    try:
        while block := content.read(_COPY):
            writer.write(block)
        digest, _ = writer.commit()
    finally:
        writer.abort()
    return digest


def index_layer(store: Store, cache: BuildCache, descriptor: Descriptor, diff_id: str) -> LayerResult:
    """Record what the stored layer blob ``descriptor`` holds; checks that it matches ``diff_id``."""
    known = cache.layer(descriptor.digest)
    if known is not None:
        return known
    if descriptor.media_type not in mt.PLAIN_LAYER_TYPES | mt.GZIP_LAYER_TYPES:
        raise GGUFPackError(f"layer {descriptor.digest[:19]} has media type {descriptor.media_type}, not a tar layer")
    plain = descriptor.media_type in mt.PLAIN_LAYER_TYPES
    diff: Diff = {}
    with store.blob_path(descriptor.digest).open("rb") as blob:
        stream = _HashingReader(_decompressed(blob, plain))
        for member, content in iter_layer_members(stream, mt.OCI_LAYER_TAR):  # type: ignore[arg-type]
            if member.kind in ("whiteout", "opaque"):
                raise GGUFPackError(
                    f"layer {descriptor.digest[:19]} deletes /{member.path}: ggufpack only uses images whose "
                    "layers add files"
                )
            if member.kind == "hardlink":
                raise GGUFPackError(f"layer {descriptor.digest[:19]} holds a hard link (/{member.path}): not supported")
            node = FileNode(member.kind, member.mode & 0o7777, member.uid, member.gid, linkname=member.linkname)
            if member.kind == "file":
                assert content is not None
                if plain and member.data_offset is not None:
                    digest = store.file_from_blob(descriptor.digest, member.data_offset, member.size)
                else:
                    digest = _copy_to_files(store, content)
                node = FileNode("file", member.mode & 0o7777, member.uid, member.gid, digest, member.size)
            diff[member.path] = node
        stream.drain()
    actual = "sha256:" + stream.hash.hexdigest()
    if actual != diff_id:
        raise GGUFPackError(
            f"layer {descriptor.digest[:19]} unpacks to {actual[:19]}, but the image config says {diff_id[:19]}"
        )
    result = LayerResult(descriptor, diff_id, diff)
    cache.record_layer(result)
    return result


def _decompressed(blob: BinaryIO, plain: bool) -> BinaryIO:
    if plain:
        return blob
    import gzip

    return gzip.GzipFile(fileobj=blob, mode="rb")  # type: ignore[return-value]
