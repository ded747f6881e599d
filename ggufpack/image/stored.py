"""A stored image as ``FROM``, ``run``, ``list``, ``inspect`` and ``estimate`` read it: its manifest and
config only, each blob read as untrusted (bounded, digest-checked) and parsed by the typed reader
(:mod:`ggufpack.oci.reader`)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from ..errors import GGUFPackError
from ..oci.descriptor import sha256_digest
from ..oci.platform import DEFAULT_PLATFORM, select_platform
from ..oci.reader import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    ImageConfig,
    ImageManifest,
    MalformedImageError,
    decode_json,
    is_index,
    parse_index,
)
from ..store import ImageRecord, Store
from ..terminal import cell


@dataclass(frozen=True)
class StoredImage:
    """A stored image read through the typed reader: its manifest (an index already resolved for a
    platform) and its config, every field ggufpack uses checked."""

    name: str
    digest: str
    manifest: ImageManifest
    config: ImageConfig


def read_json_blob(store: Store, digest: str, what: str, limit: int) -> Any:
    """A JSON blob of the store, read as untrusted: a regular file of at most ``limit`` bytes whose
    bytes match ``digest`` (a shared store or an unpacked archive may hold anything)."""
    path = store.blob_path(digest)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise GGUFPackError(f"{what}: blob {digest} is missing from the store {store.root}; pull or rebuild the image"
                            ) from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise MalformedImageError(f"{what}: blob {digest} in {store.root} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise MalformedImageError(f"{what} is larger than {limit >> 20} MiB; ggufpack does not read it")
    if sha256_digest(data) != digest:
        raise MalformedImageError(f"{what}: blob {digest} in {store.root} does not match its digest; the store is "
                                  "damaged: remove the image and pull or build it again")
    return decode_json(data, what)


def open_image(store: Store, digest: str, name: str, platform: str | None = None) -> StoredImage:
    """The image whose manifest (or index, resolved for ``platform``, default linux/amd64) is ``digest``."""
    top = read_json_blob(store, digest, f"{name}: manifest", MAX_MANIFEST_BYTES)
    if is_index(top):
        parse_index(top, name)
        digest = str(select_platform(top, platform or DEFAULT_PLATFORM, name)["digest"])
        top = read_json_blob(store, digest, f"{name}: manifest", MAX_MANIFEST_BYTES)
        if is_index(top):
            raise MalformedImageError(f"{name}: the index names another index; nested indexes are not used")
    manifest = ImageManifest.parse(top, name)
    config = read_json_blob(store, manifest.config.digest, f"{name}: image config", MAX_CONFIG_BYTES)
    return StoredImage(name, digest, manifest, ImageConfig.parse(config, name))


def record_name(record: ImageRecord) -> str:
    """How messages name a stored image: its first ref (escaped), else its short ID."""
    return cell(record.refs[0]) if record.refs else record.short_id


def read_image(store: Store, record: ImageRecord, platform: str | None = None) -> StoredImage:
    """The manifest and the config of a stored image, checked."""
    return open_image(store, record.descriptor.digest, record_name(record), platform)


def image_digests(record: ImageRecord, image: StoredImage) -> set[str]:
    """Every blob and runnable file the image holds (for its real disk use)."""
    digests = {record.descriptor.digest, image.digest, *(d.digest for d in image.manifest.blobs)}
    digests.update(record.files)
    return digests
