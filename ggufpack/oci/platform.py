"""Choosing an image index's manifest for a platform: never blindly ``manifests[0]``."""

from __future__ import annotations

import re
from typing import Any

from ggufpack.errors import GGUFPackError, UsageError

#: the platform an image is built for and chosen from an index when none is named; model images hold no
#: machine code, so the default is fixed (not the host's): the same digest on every machine
DEFAULT_PLATFORM = "linux/amd64"
#: ``os/arch[/variant]``
PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")


def parse_platform(text: str) -> dict[str, str]:
    """``os/arch[/variant]`` → the OCI platform object; UsageError when malformed."""
    if not PLATFORM_RE.match(text):
        raise UsageError(f"invalid platform {text!r}: write os/arch[/variant], e.g. linux/amd64")
    parts = text.split("/")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def select_platform(index: dict[str, Any], platform: str, name: str) -> dict[str, Any]:
    """The descriptor in ``index`` for ``os/arch[/variant]``.

    An exact match wins; failing that, one with the same OS and architecture (any variant). An
    entry without a platform (an attestation, say) is never chosen.
    """
    want = platform.split("/")
    fallback = None
    for entry in index.get("manifests", []):
        p = entry.get("platform") or {}
        have = [p.get("os"), p.get("architecture")] + ([p["variant"]] if "variant" in p else [])
        if have == want or have[: len(want)] == want:
            return dict(entry)
        if fallback is None and have[:2] == want[:2]:
            fallback = entry
    if fallback is not None:
        return dict(fallback)
    offered = sorted({"/".join(filter(None, [(e.get("platform") or {}).get("os"),
                                              (e.get("platform") or {}).get("architecture")]))
                      for e in index.get("manifests", [])} - {""})
    raise GGUFPackError(
        f"image {name} has no manifest for platform {platform}"
        + (f" (it offers {', '.join(offered)}; pass --platform)" if offered else "")
    )
