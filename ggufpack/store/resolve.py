"""Finding an image by what a user types: a ref, ``sha256:<hex>``, or an ID prefix.

Like Docker, a ref that exists wins over an ID prefix that happens to spell the same (``cafe``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ggufpack.errors import UsageError
from ggufpack.refs import parse_reference
from ggufpack.store.index import ImageRecord

MIN_PREFIX = 4
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Match:
    """The image found, and the ref it was found by (None when found by ID)."""

    record: ImageRecord
    ref: str | None


def _describe(record: ImageRecord) -> str:
    return f"{record.short_id} ({', '.join(record.refs) or 'no refs'})"


def _by_id(records: list[ImageRecord], text: str, hex_part: str) -> Match:
    candidates = [r for r in records if r.id.startswith(hex_part)]
    if len(candidates) > 1:
        listed = "; ".join(_describe(r) for r in candidates)
        raise UsageError(f"image ID prefix {text!r} is ambiguous: it matches {listed}; type more digits")
    if not candidates:
        raise _unknown(text)
    return Match(candidates[0], None)


def _unknown(text: str) -> UsageError:
    return UsageError(f"no image {text!r} in the store; `ggufpack list` shows what exists")


def find(records: list[ImageRecord], text: str) -> Match:
    """The image ``text`` names among ``records``, or a :class:`UsageError` saying why not."""
    if text.startswith("sha256:"):
        hex_part = text[len("sha256:") :]
        if len(hex_part) < MIN_PREFIX or not _HEX.fullmatch(hex_part):
            raise UsageError(
                f"{text!r} is not an image ID: expected sha256: and at least {MIN_PREFIX} hex digits"
            )
        return _by_id(records, text, hex_part)
    try:
        ref = parse_reference(text)
    except UsageError:
        if len(text) >= MIN_PREFIX and _HEX.fullmatch(text):
            return _by_id(records, text, text)
        raise
    wanted = str(ref)
    for record in records:
        if wanted in record.refs:
            return Match(record, wanted)
    if ref.digest:
        by_digest = [r for r in records if r.descriptor.digest == ref.digest]
        if by_digest:
            return Match(by_digest[0], None)
    if ref.tag == "latest" and ":" not in text and len(text) >= MIN_PREFIX and _HEX.fullmatch(text):
        return _by_id(records, text, text)
    raise _unknown(text)
