"""``index.json``: one manifest descriptor per ref, read as image records.

Each entry carries store-local annotations (never part of any image digest): the ref name, the
build time shown by ``list``, and the runnable files extracted from the image, which keep those
files alive through ``prune``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ggufpack.errors import GGUFPackError
from ggufpack.oci.descriptor import Descriptor

REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "io.ggufpack.created"
FILES = "io.ggufpack.files"
_STORE_ANNOTATIONS = (REF_NAME, CREATED, FILES)


def now_rfc3339() -> str:
    """The current UTC time as ``2024-05-01T12:00:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_rfc3339(created: str) -> str:
    """Refuse a timestamp that is not RFC 3339 with a zone, so ``list`` can sort and show it."""
    try:
        parsed = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in created:
        raise GGUFPackError(f"created time {created!r} is not RFC 3339 UTC (like 2024-05-01T12:00:00Z)")
    return created


@dataclass(frozen=True)
class ImageRecord:
    """An image in the store: its manifest descriptor and every ref that names it."""

    descriptor: Descriptor
    refs: tuple[str, ...]
    created: str
    files: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The image ID: the manifest digest's hex."""
        return self.descriptor.hex

    @property
    def short_id(self) -> str:
        return self.id[:12]


def read_index(path: Path) -> dict[str, Any]:
    """Read ``index.json``; it is replaced by rename, so no lock is needed to read a whole one."""
    try:
        index = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise GGUFPackError(f"{path} is missing: this is not a ggufpack store") from None
    except ValueError as exc:
        raise GGUFPackError(f"{path} is not valid JSON ({exc}); restore it or remove the store") from exc
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise GGUFPackError(f"{path} is not an OCI image index (no 'manifests' list)")
    return index


def entry_for(ref: str, descriptor: Descriptor, created: str, files: tuple[str, ...]) -> dict[str, Any]:
    """The ``index.json`` entry naming ``descriptor`` as ``ref``."""
    annotations = {k: v for k, v in descriptor.annotations.items() if k not in _STORE_ANNOTATIONS}
    annotations[REF_NAME] = ref
    annotations[CREATED] = created
    if files:
        annotations[FILES] = ",".join(sorted(set(files)))
    return replace(descriptor, annotations=annotations).to_json()


def entry_ref(entry: dict[str, Any]) -> str | None:
    return (entry.get("annotations") or {}).get(REF_NAME)


def records(index: dict[str, Any]) -> list[ImageRecord]:
    """Group entries by manifest digest, in index order; refs in index order too."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in index["manifests"]:
        grouped.setdefault(entry["digest"], []).append(entry)
    out = []
    for entries in grouped.values():
        first = Descriptor.from_json(entries[0])
        bare = replace(
            first, annotations={k: v for k, v in first.annotations.items() if k not in _STORE_ANNOTATIONS}
        )
        notes = [e.get("annotations") or {} for e in entries]
        refs = tuple(n[REF_NAME] for n in notes if REF_NAME in n)
        created = max((n.get(CREATED, "") for n in notes), default="")
        files = sorted({f for n in notes for f in n.get(FILES, "").split(",") if f})
        out.append(ImageRecord(descriptor=bare, refs=refs, created=created, files=tuple(files)))
    return out
