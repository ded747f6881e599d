"""Images in the store as build inputs: ``FROM <image>`` and ``COPY --from=<image>``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import GGUFPackError, UsageError
from ..oci.reader import ImageConfig, ImageManifest, MalformedImageError
from ..refs import parse_reference
from ..store import Store
from .layers import LayerRecords, LayerResult
from .snapshot import Snapshot, check_symlinks
from .stored import open_image


class ConfiguredImage:
    """What a build inherits from a base image, read from its ``config`` (an :class:`ImageConfig`): the
    store's images here, BuildKit's resolved ones in the frontend."""

    config: ImageConfig

    @property
    def history(self) -> list[dict[str, Any]]:
        """One history entry per instruction; an image without history gets one empty entry per layer."""
        return self.config.full_history

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.labels)

    @property
    def cmd(self) -> list[str] | None:
        return list(self.config.cmd) if self.config.cmd else None


@dataclass
class BaseImage(ConfiguredImage):
    """A stored image, opened: manifest, config and the filesystem its layers make."""

    name: str
    digest: str
    manifest: ImageManifest
    config: ImageConfig
    layers: list[LayerResult]
    snapshot: Snapshot


def load_image(
    store: Store, name: str, platform: str, fetch: Callable[[str], None] | None = None,
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
    image = open_image(store, record.descriptor.digest, name, platform)
    manifest, config = image.manifest, image.config
    if len(manifest.layers) != len(config.diff_ids):
        raise MalformedImageError(
            f"image {name}: the manifest has {len(manifest.layers)} layers but the config "
            f"{len(config.diff_ids)} (rootfs.diff_ids); the image is corrupt"
        )
    layers: list[LayerResult] = []
    records = LayerRecords(store)
    snapshot = Snapshot()
    for descriptor, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
        layer = records.layer(descriptor.digest)
        if layer is None:
            raise GGUFPackError(
                f"image {name}: the files of layer {descriptor.digest[:19]} are not in the store; "
                "pull the image again"
            )
        if layer.diff_id != diff_id:
            raise GGUFPackError(f"image {name}: layer {descriptor.digest[:19]} does not match the config")
        layers.append(layer)
        snapshot = snapshot.apply(layer.diff)
    check_symlinks(snapshot, f"image {name}")
    return BaseImage(name, image.digest, manifest, config, layers, snapshot)
