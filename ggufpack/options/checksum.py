"""``--checksum=<algo>:<hex>`` of ADD, checked when the Packerfile is planned and used when it is fetched."""

from __future__ import annotations

import re

from ..errors import UsageError

CHECKSUM_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def parse_checksum(text: str) -> tuple[str, str]:
    """Split ``<algo>:<hex>`` (sha256, sha384 or sha512) into the algorithm and lower-case hex."""
    algo, sep, hexdigest = text.strip().partition(":")
    algo = algo.lower()
    known = ", ".join(CHECKSUM_HEX_LENGTHS)
    if not sep:
        raise UsageError(f"bad --checksum {text!r}: write <algorithm>:<hex> with one of {known}")
    if algo not in CHECKSUM_HEX_LENGTHS:
        raise UsageError(f"bad --checksum {text!r}: unknown algorithm {algo!r}; write <algorithm>:<hex> with one of "
                         f"{known}")
    want = CHECKSUM_HEX_LENGTHS[algo]
    if len(hexdigest) != want or not re.fullmatch(r"[0-9a-fA-F]+", hexdigest):
        raise UsageError(f"bad --checksum {text!r}: a {algo} digest is {want} hex digits")
    return algo, hexdigest.lower()
