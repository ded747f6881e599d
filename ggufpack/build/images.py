"""Images in the store as build inputs: ``FROM <image>`` and ``COPY --from=<image>``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import GGUFPackError, UsageError
from ..oci import mediatypes as mt
from ..oci.platform import select_platform
from ..refs import parse_reference
from ..store import Store
from .cache import BuildCache, LayerResult
from .snapshot import Snapshot


@dataclass
class BaseImage:
    """A stored image, opened: manifest, config and the filesystem its layers make."""

    name: str
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: list[LayerResult]
    snapshot: Snapshot

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.config.get("history") or [])

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.config.get("config") or {}).get("Labels") or {})

    @property
    def cmd(self) -> list[str] | None:
        cmd = (self.config.get("config") or {}).get("Cmd")
        return list(cmd) if cmd else None


def load_image(
    store: Store, cache: BuildCache, name: str, platform: str, fetch: Callable[[str], None] | None = None,
) -> BaseImage:
    """Open a stored image; its layers' contents must be known to the store (built or pulled here).

    A registry reference the store lacks is pulled first with ``fetch`` (when given).
    """
    try:
        record = store.resolve(name)
    except UsageError:
        if fetch is None or parse_reference(name).registry is None:
            raise GGUFPackError(
                f"image {name} is not in the local store; build it here first or name it with its registry "
                "(REGISTRY/NAME:TAG) so that it is pulled"
            ) from None
        fetch(name)
        record = store.resolve(name)
    digest = record.descriptor.digest
    manifest = store.read_json(digest)
    if manifest.get("mediaType") == mt.OCI_INDEX or "manifests" in manifest:
        digest = str(select_platform(manifest, platform, name)["digest"])
        manifest = store.read_json(digest)
    config = store.read_json(manifest["config"]["digest"])
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layers: list[LayerResult] = []
    snapshot = Snapshot()
    for descriptor, diff_id in zip(manifest.get("layers", []), diff_ids, strict=False):
        layer = cache.layer(descriptor["digest"])
        if layer is None:
            raise GGUFPackError(
                f"image {name}: the files of layer {descriptor['digest'][:19]} are not in the store; "
                "pull the image again"
            )
        if layer.diff_id != diff_id:
            raise GGUFPackError(f"image {name}: layer {descriptor['digest'][:19]} does not match the config")
        layers.append(layer)
        snapshot = snapshot.apply(layer.diff)
    return BaseImage(name, digest, manifest, config, layers, snapshot)
