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
from ggufpack.oci.reader import parse_descriptor, parse_digest
from ggufpack.util.fsutil import read_small_file

REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "io.ggufpack.created"
FILES = "io.ggufpack.files"
_STORE_ANNOTATIONS = (REF_NAME, CREATED, FILES)
#: an index.json larger than this is not ours (each ref costs a few hundred bytes)
MAX_INDEX_BYTES = 64 << 20


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
        index = json.loads(read_small_file(path, MAX_INDEX_BYTES))
    except FileNotFoundError:
        raise GGUFPackError(f"{path} is missing: this is not a ggufpack store") from None
    except OSError as exc:
        raise GGUFPackError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:
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


def entry_ref(entry: Any) -> str | None:
    """The ref an entry names (None for one without, or one that is not a valid entry)."""
    annotations = entry.get("annotations") if isinstance(entry, dict) else None
    ref = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return ref if isinstance(ref, str) else None


def _checked_entry(entry: Any, position: int) -> Descriptor:
    """An entry as a descriptor, every field records() uses checked (a shared store may hold anything)."""
    descriptor = parse_descriptor(entry, f"index.json entry {position}")
    files = descriptor.annotations.get(FILES, "")
    for digest in filter(None, files.split(",")):
        parse_digest(digest, f"index.json entry {position} {FILES}")
    return descriptor


def records(index: dict[str, Any]) -> list[ImageRecord]:
    """Group entries by manifest digest, in index order; refs in index order too. Malformed entries
    are left out (:func:`malformed_entries` says which)."""
    grouped: dict[str, list[Descriptor]] = {}
    for position, entry in enumerate(index["manifests"]):
        try:
            descriptor = _checked_entry(entry, position)
        except GGUFPackError:
            continue
        grouped.setdefault(descriptor.digest, []).append(descriptor)
    out = []
    for entries in grouped.values():
        first = entries[0]
        bare = replace(
            first, annotations={k: v for k, v in first.annotations.items() if k not in _STORE_ANNOTATIONS}
        )
        notes = [e.annotations for e in entries]
        refs = tuple(n[REF_NAME] for n in notes if REF_NAME in n)
        created = max((n.get(CREATED, "") for n in notes), default="")
        files = sorted({f for n in notes for f in n.get(FILES, "").split(",") if f})
        out.append(ImageRecord(descriptor=bare, refs=refs, created=created, files=tuple(files)))
    return out


def malformed_entries(index: dict[str, Any]) -> list[str]:
    """Why each entry :func:`records` leaves out is malformed."""
    problems = []
    for position, entry in enumerate(index["manifests"]):
        try:
            _checked_entry(entry, position)
        except GGUFPackError as exc:
            problems.append(str(exc))
    return problems
