"""Stored images as ``list``, ``inspect``, ``FROM``, ``run`` and ``estimate`` read them: manifests and
configs only, each blob read as untrusted (bounded, digest-checked) and parsed by the typed reader
(:mod:`ggufpack.oci.reader`); and the summaries ``list`` and ``inspect`` show."""

from __future__ import annotations

import datetime
import os
import stat
from dataclasses import dataclass
from typing import Any

from .errors import GGUFPackError
from .oci.descriptor import sha256_digest
from .oci.platform import select_platform
from .oci.reader import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    ImageConfig,
    ImageManifest,
    MalformedImageError,
    ModelEntry,
    decode_json,
    is_index,
    parse_index,
)
from .refs import parse_reference
from .store import ImageRecord, Store
from .terminal import cell


@dataclass(frozen=True)
class ImageSummary:
    """One row of ``ggufpack list``: a ref (or none) of a stored image and its model facts."""

    name: str
    tag: str
    image_id: str
    arch: str
    params: str
    bpw: str
    file_type: str
    usage: str
    created: str
    size: int
    disk_usage: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "tag": self.tag, "id": self.image_id, "architecture": self.arch,
            "parameters": self.params, "bpw": self.bpw, "filetype": self.file_type, "usage": self.usage,
            "created": self.created, "size": self.size, "disk_usage": self.disk_usage,
        }


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
        from .plan.graph import DEFAULT_PLATFORM

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


def summarize(store: Store, record: ImageRecord) -> list[ImageSummary]:
    """One summary per ref of the image (one with an empty name when it has none)."""
    image = read_image(store, record)
    labels = image.config.labels
    disk = store.disk_usage(image_digests(record, image))
    refs = record.refs or ("",)
    rows = []
    for ref in refs:
        name, tag = "<none>", "<none>"
        if ref:
            parsed = parse_reference(ref)
            name, tag = parsed.name, parsed.tag or parsed.digest or ""
        rows.append(ImageSummary(
            name=name, tag=tag, image_id=record.short_id, arch=labels.get("gguf.model.architecture", ""),
            params=labels.get("gguf.model.parameters", ""), bpw=labels.get("gguf.model.bpw", ""),
            file_type=labels.get("gguf.model.filetype", ""), usage=labels.get("gguf.model.usage", ""),
            created=record.created, size=image.config.size, disk_usage=disk,
        ))
    return rows


def list_images(store: Store) -> tuple[list[ImageSummary], list[str]]:
    """The summaries of every readable image, and one warning per image that could not be read: one
    bad image (a hostile config, a damaged blob) never hides the others."""
    summaries: list[ImageSummary] = []
    warnings = [f"{store.layout.index}: {problem}; that entry is left out" for problem in store.malformed_entries()]
    for record in store.images():
        try:
            summaries += summarize(store, record)
        except GGUFPackError as exc:
            warnings.append(f"image {record.short_id} is left out: {exc}")  # the message names its ref
    return summaries, warnings


def human_size(n: int) -> str:
    """Binary units as gguf-packer prints them: ``379.38 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(created: str, now: datetime.datetime | None = None) -> str:
    """``5 minutes ago`` from an RFC 3339 time (anything else is shown as it is)."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        moment = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
        seconds = max(int((now - moment).total_seconds()), 0)
    except (ValueError, TypeError, OverflowError):  # not a time, no zone, out of range
        return created
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def render_table(rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces; cells are printed escaped (see :mod:`.terminal`)."""
    rows = [[cell(text) for text in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def inspect_image(store: Store, record: ImageRecord) -> dict[str, Any]:
    """What ``inspect`` shows: ids, refs, manifest, config summary, labels, layers, disk use."""
    image = read_image(store, record)
    return {
        "id": record.id,
        "digest": record.descriptor.digest,
        "refs": list(record.refs),
        "created": record.created,
        "disk_usage": store.disk_usage(image_digests(record, image)),
        **image_details(image.manifest, image.config),
    }


def image_details(manifest: ImageManifest, config: ImageConfig) -> dict[str, Any]:
    """What the manifest and config alone tell (also for an image still in a registry)."""

    def model(entry: ModelEntry | None) -> dict[str, Any] | None:
        return entry.summary() if entry is not None else None

    return {
        "platform": f"{config.os}/{config.architecture}",
        "cmd": list(config.cmd) if config.cmd is not None else None,
        "size": config.size,
        "model": model(config.model),
        "drafter": model(config.drafter),
        "projector": model(config.projector),
        "adapters": [model(a) for a in config.adapters],
        "labels": dict(config.labels),
        "layers": [
            {"digest": layer.digest, "mediaType": layer.media_type, "size": layer.size,
             "created_by": history.get("created_by") or ""}
            for layer, history in zip(manifest.layers, config.layer_history, strict=False)
        ],
        "history": list(config.history),
        "manifest": manifest.raw,
    }
