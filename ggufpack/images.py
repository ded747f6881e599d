"""Summaries of stored images for ``list`` and ``inspect``, read from manifests and configs only."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

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

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "tag": self.tag, "id": self.image_id, "architecture": self.arch,
            "parameters": self.params, "bpw": self.bpw, "filetype": self.file_type, "usage": self.usage,
            "created": self.created, "size": self.size, "disk_usage": self.disk_usage,
        }


def image_digests(store: Store, record: ImageRecord) -> set[str]:
    """Every blob and runnable file the image holds (for its real disk use)."""
    manifest = store.read_json(record.descriptor.digest)
    digests = {record.descriptor.digest, manifest["config"]["digest"]}
    digests.update(layer["digest"] for layer in manifest.get("layers", []))
    digests.update(record.files)
    return digests


def read_image(store: Store, record: ImageRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and the config of a stored image."""
    manifest = store.read_json(record.descriptor.digest)
    return manifest, store.read_json(manifest["config"]["digest"])


def summarize(store: Store, record: ImageRecord) -> list[ImageSummary]:
    """One summary per ref of the image (one with an empty name when it has none)."""
    _, config = read_image(store, record)
    fields = config.get("config") or {}
    labels = fields.get("Labels") or {}
    disk = store.disk_usage(image_digests(store, record))
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
            created=record.created, size=int(fields.get("Size") or 0), disk_usage=disk,
        ))
    return rows


def human_size(n: int) -> str:
    """Binary units as gguf-packer prints them: ``379.38 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(created: str, now: datetime.datetime | None = None) -> str:
    """``5 minutes ago`` from an RFC 3339 time."""
    try:
        moment = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created
    now = now or datetime.datetime.now(datetime.UTC)
    seconds = max(int((now - moment).total_seconds()), 0)
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def render_table(rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def inspect_image(store: Store, record: ImageRecord) -> dict[str, Any]:
    """What ``inspect`` shows: ids, refs, manifest, config summary, labels, layers, disk use."""
    manifest, config = read_image(store, record)
    return {
        "id": record.id,
        "digest": record.descriptor.digest,
        "refs": list(record.refs),
        "created": record.created,
        "disk_usage": store.disk_usage(image_digests(store, record)),
        **image_details(manifest, config),
    }


def image_details(manifest: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What the manifest and config alone tell (also for an image still in a registry)."""
    fields = config.get("config") or {}

    def model(entry: dict[str, Any] | None) -> dict[str, Any] | None:
        if not entry:
            return None
        return {k: entry.get(k) for k in ("CmdParameterValue", "CmdParameterIndex", "Architecture", "Parameters",
                                          "BitsPerWeight", "FileType")}

    return {
        "platform": f"{config.get('os')}/{config.get('architecture')}",
        "cmd": fields.get("Cmd"),
        "size": fields.get("Size"),
        "model": model(fields.get("Model")),
        "drafter": model(fields.get("Drafter")),
        "projector": model(fields.get("Projector")),
        "adapters": [model(a) for a in fields.get("Adapters") or []],
        "labels": fields.get("Labels") or {},
        "layers": [
            {"digest": layer["digest"], "mediaType": layer["mediaType"], "size": layer["size"],
             "created_by": history.get("created_by", "")}
            for layer, history in zip(
                manifest.get("layers", []), [h for h in config.get("history", []) if not h.get("empty_layer")],
                strict=False,
            )
        ],
        "history": config.get("history", []),
        "manifest": manifest,
    }
