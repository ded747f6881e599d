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

import gzip
import hashlib
import zlib
from typing import BinaryIO

from ..errors import GGUFPackError
from ..oci import mediatypes as mt
from ..oci.descriptor import Descriptor
from ..oci.extract import LayerMember, iter_layer_members
from ..store import Store
from ..store.ingest import IngestWriter
from .layers import LayerRecords, LayerResult
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


def index_layer(store: Store, descriptor: Descriptor, diff_id: str) -> LayerResult:
    """Record what the stored layer blob ``descriptor`` holds; checks that it matches ``diff_id``."""
    records = LayerRecords(store)
    known = records.layer(descriptor.digest)
    if known is not None:
        return known
    if descriptor.media_type not in mt.PLAIN_LAYER_TYPES | mt.GZIP_LAYER_TYPES:
        raise GGUFPackError(f"layer {descriptor.digest[:19]} has media type {descriptor.media_type}, not a tar layer")
    plain = descriptor.media_type in mt.PLAIN_LAYER_TYPES
    if plain and descriptor.digest != diff_id:  # an uncompressed layer is its own diff
        raise GGUFPackError(
            f"layer {descriptor.digest[:19]} is uncompressed but the image config gives it diff_id {diff_id[:19]}"
        )
    try:
        diff = _index_members(store, descriptor, diff_id, plain)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # what tarfile does not turn into its own errors
        raise GGUFPackError(f"layer {descriptor.digest[:19]} is not a valid gzip stream ({e})") from None
    result = LayerResult(descriptor, diff_id, diff)
    records.record(result)
    return result


def _index_members(store: Store, descriptor: Descriptor, diff_id: str, plain: bool) -> Diff:
    diff: Diff = {}
    blob_path = store.blob_path(descriptor.digest)
    with blob_path.open("rb") as blob:
        if plain:  # verified on download: read the headers only, files become byte ranges of the blob
            members = iter_layer_members(blob, mt.OCI_LAYER_TAR, random_access=True)
            stream = None
        else:
            stream = _HashingReader(_decompressed(blob))
            members = iter_layer_members(stream, mt.OCI_LAYER_TAR)  # type: ignore[arg-type]
        for member, content in members:
            diff[member.path] = _node(store, descriptor, member, content, plain)
        if stream is not None:
            stream.drain()
            actual = "sha256:" + stream.hash.hexdigest()
            if actual != diff_id:
                raise GGUFPackError(
                    f"layer {descriptor.digest[:19]} unpacks to {actual[:19]}, but the image config says {diff_id[:19]}"
                )
    return diff


def _decompressed(blob: BinaryIO) -> BinaryIO:
    return gzip.GzipFile(fileobj=blob, mode="rb")  # type: ignore[return-value]


def _node(store: Store, layer: Descriptor, member: LayerMember, content: BinaryIO | None, plain: bool) -> FileNode:
    """The snapshot node of one member; a file's bytes go to the store's runnable files."""
    where = f"layer {layer.digest[:19]}"
    if member.kind in ("whiteout", "opaque"):
        raise GGUFPackError(f"{where} deletes /{member.path}: ggufpack only uses images whose layers add files")
    if member.kind == "hardlink":
        raise GGUFPackError(f"{where} holds a hard link (/{member.path}): not supported")
    mode = member.mode & 0o7777
    if member.kind != "file":
        return FileNode(member.kind, mode, member.uid, member.gid, linkname=member.linkname)
    if plain and member.data_offset is not None:
        digest = store.file_from_blob(layer.digest, member.data_offset, member.size)
    else:
        assert content is not None
        digest = _copy_to_files(store, content)
    return FileNode("file", mode, member.uid, member.gid, digest, member.size)
