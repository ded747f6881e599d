"""The summaries ``list`` and ``inspect`` show of stored images (read through :mod:`ggufpack.image.stored`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import GGUFPackError
from .image.stored import image_digests, read_image
from .oci.reader import (
    ImageConfig,
    ImageManifest,
    ModelEntry,
)
from .refs import parse_reference
from .store import ImageRecord, Store


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
    #: the model's numbers as its config states them (None without a model entry), for ``--format json``
    parameter_count: int | None = None
    bits_per_weight: float | None = None
    #: the digest a ref pulled by digest names (``repo@sha256:...``); its tag is then ``<none>``, as Docker lists it
    digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Numbers as JSON numbers (sizes in bytes, parameters a count, bits per weight a float); the
        table's human forms (``102.72 K``, ``8.57 bpw``) are what ``list`` prints."""
        return {
            "name": self.name, "tag": self.tag, "id": self.image_id, "architecture": self.arch,
            "parameters": self.parameter_count, "bpw": self.bits_per_weight, "filetype": self.file_type,
            "usage": self.usage, "created": self.created, "size": self.size, "disk_usage": self.disk_usage,
            "digest": self.digest,
        }


def summarize(store: Store, record: ImageRecord) -> list[ImageSummary]:
    """One summary per ref of the image (one with an empty name when it has none)."""
    image = read_image(store, record)
    labels, model = image.config.labels, image.config.model
    disk = store.disk_usage(image_digests(record, image))
    refs = record.refs or ("",)
    rows = []
    for ref in refs:
        name, tag, digest = "<none>", "<none>", None
        if ref:
            parsed = parse_reference(ref)
            name, tag, digest = parsed.name, parsed.tag or "<none>", parsed.digest
        rows.append(ImageSummary(
            name=name, tag=tag, image_id=record.short_id, arch=labels.get("gguf.model.architecture", ""),
            params=labels.get("gguf.model.parameters", ""), bpw=labels.get("gguf.model.bpw", ""),
            file_type=labels.get("gguf.model.filetype", ""), usage=labels.get("gguf.model.usage", ""),
            created=record.created, size=image.config.size, disk_usage=disk,
            parameter_count=model.parameters if model else None,
            bits_per_weight=round(model.bits_per_weight, 4) if model and model.bits_per_weight is not None else None,
            digest=digest,
        ))
    return rows


def list_images(store: Store) -> tuple[list[ImageSummary], list[str]]:
    """The summaries of every readable image, and one warning per image that could not be read: one
    bad image (a hostile config, a damaged blob) never hides the others. An image no ref names that a
    running server holds is listed as ``<none>``, as Docker lists an untagged image a container uses."""
    summaries: list[ImageSummary] = []
    warnings = [f"{store.layout.index}: {problem}; that entry is left out" for problem in store.malformed_entries()]
    images = store.images()
    for record in images + store.held_images(images):
        try:
            summaries += summarize(store, record)
        except GGUFPackError as exc:
            warnings.append(f"image {record.short_id} is left out: {exc}")  # the message names its ref
    return summaries, warnings


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
        "platform": f"{config.os}/{config.architecture}" if config.os and config.architecture else None,
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
