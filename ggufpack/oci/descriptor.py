"""OCI content descriptors and canonical JSON.

Every blob we write (layer, config, manifest) is addressed by a descriptor. JSON blobs are
serialized canonically (sorted keys, no whitespace) so that the same content always has the same
digest on any machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Serialize ``obj`` the one way we ever serialize JSON blobs."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_digest(data: bytes) -> str:
    """The OCI digest string (``sha256:<hex>``) of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """An OCI descriptor: what a blob is, its digest and its size."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, str] | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Descriptor:
        return cls(
            media_type=obj["mediaType"],
            digest=obj["digest"],
            size=int(obj["size"]),
            annotations=dict(obj.get("annotations") or {}),
            platform=obj.get("platform"),
            artifact_type=obj.get("artifactType"),
        )

    @property
    def hex(self) -> str:
        """The hex part of the digest (the blob's file name)."""
        return self.digest.split(":", 1)[1]
