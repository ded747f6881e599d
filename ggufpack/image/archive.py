"""``ggufpack load``: an OCI image layout archive or a ``docker save`` archive into the store.

The archive is read once, as a stream (a file or stdin; gzip or plain tar), never a member in memory
but the small JSON documents: every regular member is copied into a staging directory under the
store's ``ingest/`` while it is hashed, and a member named ``blobs/sha256/<hex>`` must hash to that
name. Nothing is written by a member's name: names only say what a member is, so a ``..`` or an
absolute name, a link leaving the archive or a device is refused outright.

Then the images are checked as a pull checks them (the manifest and config with
:class:`~ggufpack.oci.reader.ImageManifest` and :class:`~ggufpack.oci.reader.ImageConfig`, every
blob's digest and size, the rootfs diff_ids, :func:`index_layer` and :func:`check_symlinks`) and only
then do the blobs enter the store (:meth:`~ggufpack.store.Store.adopt_blob` verifies them again) and
the refs move. An archive whose structure fails a check leaves the store as it was; one whose layer
content is refused (a whiteout, say) leaves the refs as they were.

A docker archive (``manifest.json`` with ``Config``, ``RepoTags``, ``Layers``) becomes an OCI
manifest whose layers are the layer tars as they are, the way ``skopeo copy docker-archive: oci:``
converts it, stored under its ``RepoTags``.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import GGUFPackError, UsageError
from ..oci import mediatypes as mt
from ..oci.descriptor import Descriptor, canonical_json, sha256_digest
from ..oci.platform import select_platform
from ..oci.reader import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    ImageConfig,
    ImageManifest,
    decode_json,
    layer_diff_ids,
    parse_index,
)
from ..refs import canonical_reference
from ..store import Store
from ..store.ingest import ContentMismatchError, IngestWriter
from ..util.locking import try_lock
from .layer_index import index_layer
from .snapshot import Snapshot, check_symlinks

#: members an archive may have; more is refused (each is a staged file)
MAX_MEMBERS = 100_000
_COPY = 8 * 1024 * 1024
_BLOB_NAME = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_CONFIG_NAME = re.compile(r"(?:.*/)?([0-9a-f]{64})\.json")
_DOC_NAMES = ("index.json", "oci-layout", "manifest.json", "repositories")
ANNOTATION_NAME = "io.containerd.image.name"
ANNOTATION_REF = "org.opencontainers.image.ref.name"


class ArchiveError(GGUFPackError):
    """An archive that is not a usable image archive; nothing was stored."""


@dataclass(frozen=True)
class Staged:
    digest: str
    size: int
    gzip: bool


@dataclass
class LoadResult:
    refs: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    format: str = ""  # oci | docker


@dataclass
class _Image:
    manifest_bytes: bytes
    media_type: str
    digest: str
    blobs: list[Descriptor]  # config first
    names: list[str]


class _Staging:
    """The archive's regular members, hashed into files named by their digests."""

    def __init__(self, store: Store, source: str) -> None:
        self.store, self.source = store, source
        self.dir = store.layout.ingest / f"load-{os.getpid()}-{os.urandom(4).hex()}"
        self.dir.mkdir(parents=True)
        self._fd = os.open(self.dir, os.O_RDONLY | os.O_CLOEXEC)
        try_lock(self._fd)  # prune removes only the staging directories of dead processes
        self.members: dict[str, Staged] = {}
        self.docs: dict[str, bytes] = {}

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._fd)

    def path(self, digest: str) -> Path:
        return self.dir / digest.split(":", 1)[1]

    def read(self, digest: str, limit: int, what: str) -> bytes:
        staged = next((s for s in self.members.values() if s.digest == digest), None)
        if staged is None:
            raise ArchiveError(f"{self.source}: {what} {digest[:19]} is not in the archive")
        if staged.size > limit:
            raise ArchiveError(f"{self.source}: {what} {digest[:19]} is {staged.size} bytes, more than the {limit} "
                               "allowed; refused, nothing was stored")
        return self.path(digest).read_bytes()

    def add(self, name: str, member: tarfile.TarInfo, content: IO[bytes]) -> None:
        if name in _DOC_NAMES:  # read into memory: bounded before a byte is read
            if member.size > MAX_MANIFEST_BYTES:
                raise ArchiveError(f"{self.source}: {name} is {member.size} bytes, more than the "
                                   f"{MAX_MANIFEST_BYTES} a manifest may have; refused, nothing was stored")
            self.docs[name] = content.read()
            return
        expected = None
        if match := _BLOB_NAME.fullmatch(name):
            expected = "sha256:" + match.group(1)
        writer = IngestWriter(self.dir, self.dir)
        head = b""
        try:
            while block := content.read(_COPY):
                if len(head) < 2:
                    head += block[:2]
                writer.write(block)
            digest, size = writer.commit(expected, member.size)
        except ContentMismatchError as exc:
            raise ArchiveError(f"{self.source}: {name} hashes to {exc.digest} ({exc.size} bytes), not what its name "
                               "says; refused, nothing was stored") from None
        finally:
            writer.abort()
        self.members[name] = Staged(digest, size, head[:2] == b"\x1f\x8b")


def _member_name(member: tarfile.TarInfo, source: str) -> str:
    raw = member.name
    name = posixpath.normpath(raw)
    if raw.startswith("/") or name == ".." or name.startswith("../") or "\x00" in raw or "\\" in raw:
        raise ArchiveError(f"{source}: member {raw!r} names a path outside the archive; refused, nothing was stored")
    if any(part == ".." for part in raw.split("/")):
        raise ArchiveError(f"{source}: member {raw!r} has a '..' in its name; refused, nothing was stored")
    return name


def _stage(store: Store, stream: IO[bytes], source: str) -> _Staging:
    staging = _Staging(store, source)
    links: dict[str, str] = {}
    try:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115
        except tarfile.TarError as exc:
            raise ArchiveError(f"{source}: not a tar archive ({exc})") from None
        count = 0
        with tar:
            try:
                for member in tar:
                    count += 1
                    if count > MAX_MEMBERS:
                        raise ArchiveError(f"{source}: more than {MAX_MEMBERS} members; refused, nothing was stored")
                    name = _member_name(member, source)
                    if member.isdir():
                        continue
                    if member.issym() or member.islnk():
                        target = member.linkname
                        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target)) \
                            if member.issym() else posixpath.normpath(target)
                        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                            raise ArchiveError(f"{source}: member {name} links to {target!r}, outside the archive; "
                                               "refused, nothing was stored")
                        links[name] = resolved
                        continue
                    if not member.isreg():
                        raise ArchiveError(f"{source}: member {name} is not a file, directory or link; refused")
                    content = tar.extractfile(member)
                    assert content is not None
                    staging.add(name, member, content)
            except tarfile.TarError as exc:
                raise ArchiveError(f"{source}: a broken tar archive ({exc}); nothing was stored") from None
        for name, target in links.items():  # docker save links a layer shared by two images
            seen: set[str] = set()
            while target in links and target not in seen:
                seen.add(target)
                target = links[target]
            if target not in staging.members:
                raise ArchiveError(f"{source}: member {name} links to {target}, which is not a file of the archive")
            staging.members[name] = staging.members[target]
    except BaseException:
        staging.close()
        raise
    return staging


def _familiar(name: str) -> str:
    """``docker.io/library/qs:bk`` (skopeo's and containerd's spelling of a Docker name) → ``qs:bk``, the name
    ``docker save`` writes and ``-t qs:bk`` gives: a name without a registry is a local image here."""
    for prefix in ("docker.io/library/", "index.docker.io/library/"):
        if name.startswith(prefix) and "/" not in name[len(prefix):]:
            return name[len(prefix):]
    return name


def _names_of(descriptor: Descriptor, tags: list[str]) -> list[str]:
    if tags:
        return tags
    annotations = descriptor.annotations
    name = annotations.get(ANNOTATION_NAME) or annotations.get(ANNOTATION_REF) or ""
    if name and (":" in name or "/" in name or "@" in name):  # a bare ref.name is only a tag
        return [_familiar(name)]
    return []


def _oci_images(staging: _Staging, platform: str, tags: list[str]) -> list[_Image]:
    source = staging.source
    layout = staging.docs.get("oci-layout")
    if layout is not None:
        version = decode_json(layout, f"{source}: oci-layout")
        if not isinstance(version, dict) or version.get("imageLayoutVersion") != mt.OCI_LAYOUT_VERSION:
            raise ArchiveError(f"{source}: oci-layout is not imageLayoutVersion {mt.OCI_LAYOUT_VERSION}")
    index = decode_json(staging.docs["index.json"], f"{source}: index.json")
    images: list[_Image] = []
    for entry in parse_index(index, f"{source}: index.json"):
        descriptor = entry
        data = _checked(staging, descriptor, MAX_MANIFEST_BYTES, "manifest")
        parsed = decode_json(data, f"{source}: manifest {descriptor.digest[:19]}")
        if isinstance(parsed, dict) and (parsed.get("mediaType") in mt.INDEX_TYPES or "manifests" in parsed):
            children = parse_index(parsed, f"{source}: index {descriptor.digest[:19]}")
            child = Descriptor.from_json(select_platform({"manifests": [c.to_json() for c in children]},
                                                         platform, source))
            data = _checked(staging, child, MAX_MANIFEST_BYTES, "manifest")
            parsed = decode_json(data, f"{source}: manifest {child.digest[:19]}")
            descriptor = Descriptor(child.media_type, child.digest, child.size, entry.annotations)
        if isinstance(parsed, dict) and (parsed.get("mediaType") in mt.INDEX_TYPES or "manifests" in parsed):
            raise ArchiveError(f"{source}: an index names another index; nested indexes are not loaded")
        names = _names_of(descriptor, tags)
        manifest = ImageManifest.parse(parsed, f"{source}: {descriptor.digest[:19]}")
        media_type = manifest.media_type or descriptor.media_type or mt.OCI_MANIFEST
        images.append(_Image(data, media_type, descriptor.digest, manifest.blobs, names))
    return images


def _checked(staging: _Staging, descriptor: Descriptor, limit: int, what: str) -> bytes:
    if descriptor.size > limit:
        raise ArchiveError(f"{staging.source}: the {what} {descriptor.digest[:19]} is {descriptor.size} bytes, more "
                           f"than the {limit} allowed; refused, nothing was stored")
    data = staging.read(descriptor.digest, limit, what)
    if len(data) != descriptor.size:
        raise ArchiveError(f"{staging.source}: the {what} {descriptor.digest[:19]} is {len(data)} bytes, its "
                           f"descriptor says {descriptor.size}; refused, nothing was stored")
    return data


def _docker_images(staging: _Staging, tags: list[str]) -> list[_Image]:
    source = staging.source
    doc = decode_json(staging.docs["manifest.json"], f"{source}: manifest.json")
    if not isinstance(doc, list) or not doc:
        raise ArchiveError(f"{source}: manifest.json is not a list of images")
    images: list[_Image] = []
    for i, entry in enumerate(doc):
        where = f"{source}: manifest.json[{i}]"
        if not isinstance(entry, dict):
            raise ArchiveError(f"{where} is not an object")
        config_name, layer_names = entry.get("Config"), entry.get("Layers")
        repo_tags = entry.get("RepoTags") or []
        if not isinstance(config_name, str) or not isinstance(layer_names, list) \
                or not all(isinstance(n, str) for n in layer_names) \
                or not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags):
            raise ArchiveError(f"{where}: write Config (a member), Layers (members) and RepoTags (names)")
        config = _docker_member(staging, config_name, where)
        if config.size > MAX_CONFIG_BYTES:
            raise ArchiveError(f"{where}: the config is {config.size} bytes, more than the {MAX_CONFIG_BYTES} a "
                               "config may have; refused, nothing was stored")
        match = _CONFIG_NAME.fullmatch(posixpath.normpath(config_name))
        if match and config.digest != "sha256:" + match.group(1):
            raise ArchiveError(f"{where}: {config_name} hashes to {config.digest}, not the image ID its name says; "
                               "refused, nothing was stored")
        layers = []
        for name in layer_names:
            staged = _docker_member(staging, name, where)
            media_type = mt.OCI_LAYER_TAR_GZIP if staged.gzip else mt.OCI_LAYER_TAR
            layers.append(Descriptor(media_type, staged.digest, staged.size))
        config_desc = Descriptor(mt.OCI_CONFIG, config.digest, config.size)
        manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_desc.to_json(),
                    "layers": [layer.to_json() for layer in layers]}
        data = canonical_json(manifest)
        images.append(_Image(data, mt.OCI_MANIFEST, sha256_digest(data), [config_desc, *layers],
                             tags or [_familiar(t) for t in repo_tags]))
    return images


def _docker_member(staging: _Staging, name: str, where: str) -> Staged:
    normal = posixpath.normpath(name)
    if name.startswith("/") or normal.startswith("../") or normal == "..":
        raise ArchiveError(f"{where}: {name!r} names a path outside the archive")
    staged = staging.members.get(normal)
    if staged is None:
        raise ArchiveError(f"{where}: {name} is not a file of the archive")
    return staged


def _check_image(staging: _Staging, image: _Image) -> dict[str, Any]:
    """Everything a pull checks before the blobs are stored; returns the parsed config."""
    source = staging.source
    where = f"{source}: image {image.digest[:19]}"
    if not image.names:
        raise UsageError(f"{where} has no name in the archive: give one with -t NAME:TAG")
    for name in image.names:
        canonical_reference(name)
    config_desc, layers = image.blobs[0], image.blobs[1:]
    if config_desc.media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        raise ArchiveError(f"{where} is not an image (config media type {config_desc.media_type}); "
                           "ggufpack load takes images only")
    config = decode_json(_checked(staging, config_desc, MAX_CONFIG_BYTES, "config"), f"{where}: the image config")
    ImageConfig.parse(config, where)
    diff_ids = layer_diff_ids(config, where, len(layers))
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        if layer.media_type in mt.PLAIN_LAYER_TYPES and layer.digest != diff_id:
            raise ArchiveError(f"{where}: layer {layer.digest[:19]} is an uncompressed tar but the config gives it "
                               f"diff_id {diff_id[:19]}; refused, nothing was stored")
        staged = next((s for s in staging.members.values() if s.digest == layer.digest), None)
        if staged is None:
            raise ArchiveError(f"{where}: layer {layer.digest[:19]} is not in the archive")
        if staged.size != layer.size:
            raise ArchiveError(f"{where}: layer {layer.digest[:19]} is {staged.size} bytes, the manifest says "
                               f"{layer.size}; refused, nothing was stored")
    return config


def index_image_layers(store: Store, layers: Sequence[Descriptor], diff_ids: Sequence[str], what: str) -> set[str]:
    """Record what each stored layer holds (:func:`index_layer`), check the filesystem they make with
    :func:`check_symlinks`, and return its runnable files: what a pull and a load do before the ref moves."""
    snapshot = Snapshot()
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        snapshot = snapshot.apply(index_layer(store, layer, diff_id).diff)
    check_symlinks(snapshot, what)
    return {node.digest for _, node in snapshot.items() if node.digest}


def _store(store: Store, staging: _Staging, image: _Image, config: dict[str, Any]) -> list[str]:
    for blob in image.blobs:
        if not store.has_blob(blob.digest):
            copy = staging.dir / f"adopt-{blob.hex}"
            os.link(staging.path(blob.digest), copy)  # the staged file stays for another image using it
            store.adopt_blob(copy, blob.digest, blob.size)
    files = index_image_layers(store, image.blobs[1:], config["rootfs"]["diff_ids"],
                               f"{staging.source}: image {image.digest[:19]}")
    store.put_bytes(image.manifest_bytes, image.digest)
    descriptor = Descriptor(image.media_type, image.digest, len(image.manifest_bytes))
    return [store.set_ref(name, descriptor, files=files) for name in image.names]


def load_archive(store: Store, stream: IO[bytes], source: str, *, platform: str = "linux/amd64",
                 tags: Iterable[str] = ()) -> LoadResult:
    """Import the images of the archive read from ``stream`` (``source`` names it in messages)."""
    tag_list = list(tags)
    with store.lease():
        staging = _stage(store, stream, source)
        try:
            if "index.json" in staging.docs:
                kind, images = "oci", _oci_images(staging, platform, tag_list)
            elif "manifest.json" in staging.docs:
                kind, images = "docker", _docker_images(staging, tag_list)
            else:
                raise ArchiveError(f"{source}: neither an OCI image layout (index.json) nor a docker archive "
                                   "(manifest.json)")
            if not images:
                raise ArchiveError(f"{source}: the archive holds no image")
            configs = [_check_image(staging, image) for image in images]
            result = LoadResult(format=kind)
            for image, config in zip(images, configs, strict=True):
                result.refs.extend(_store(store, staging, image, config))
                result.digests.append(image.digest)
        finally:
            staging.close()
    return result


def load_path(store: Store, path: Path, **kwargs: Any) -> LoadResult:
    try:
        stream = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise GGUFPackError(f"cannot read {path}: {exc.strerror}") from None
    with stream:
        return load_archive(store, stream, str(path), **kwargs)
