"""OCI image config and manifest bodies.

Plain dicts in, plain dicts out: serialization (canonical JSON) and digests are
:mod:`ggufpack.oci.descriptor`'s job, so the same inputs always give the same blob. Nothing here
reads the clock: ``created`` appears only when the caller passes it (from ``SOURCE_DATE_EPOCH``).
"""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Mapping
from typing import Any

from ggufpack.errors import UsageError
from ggufpack.oci.descriptor import Descriptor, canonical_json, sha256_digest
from ggufpack.oci.mediatypes import OCI_MANIFEST


def source_date_epoch(environ: Mapping[str, str] = os.environ) -> int | None:
    """``SOURCE_DATE_EPOCH`` as an int, or ``None`` when unset or empty."""
    raw = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={raw!r} is not a Unix time; set it to whole seconds since 1970")
    return int(raw)


def rfc3339(epoch: int) -> str:
    """A Unix time as the UTC RFC 3339 string OCI uses (``2024-01-02T03:04:05Z``)."""
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def history_entry(
    created_by: str, *, empty_layer: bool = False, created: str | None = None, comment: str | None = None
) -> dict[str, Any]:
    """One ``history`` item; ``empty_layer`` marks instructions that add no layer (ARG, LABEL, CMD)."""
    entry: dict[str, Any] = {"created_by": created_by}
    if created is not None:
        entry["created"] = created
    if comment is not None:
        entry["comment"] = comment
    if empty_layer:
        entry["empty_layer"] = True
    return entry


def build_image_config(
    *,
    architecture: str,
    os: str,
    diff_ids: list[str],
    history: list[dict[str, Any]],
    config: dict[str, Any],
    created: str | None = None,
) -> dict[str, Any]:
    """An ``application/vnd.oci.image.config.v1+json`` body.

    ``history`` must hold one non-empty entry per diff_id, in order, as runtimes pair them up.
    """
    layered = sum(1 for h in history if not h.get("empty_layer"))
    if layered != len(diff_ids):
        raise ValueError(f"history has {layered} layer entries for {len(diff_ids)} diff_ids")
    body: dict[str, Any] = {
        "architecture": architecture,
        "os": os,
        "config": copy.deepcopy(config),
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": copy.deepcopy(history),
    }
    if created is not None:
        body["created"] = created
    return body


def build_manifest(
    config: Descriptor,
    layers: list[Descriptor],
    annotations: dict[str, str],
    *,
    artifact_type: str | None = None,
) -> dict[str, Any]:
    """An ``application/vnd.oci.image.manifest.v1+json`` body (``artifact_type`` for ModelPack)."""
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if artifact_type is not None:
        body["artifactType"] = artifact_type
    if annotations:
        body["annotations"] = dict(annotations)
    return body


def json_blob(body: Any, media_type: str) -> tuple[bytes, Descriptor]:
    """The canonical bytes of a JSON body and the descriptor that addresses them."""
    data = canonical_json(body)
    return data, Descriptor(media_type, sha256_digest(data), len(data))
