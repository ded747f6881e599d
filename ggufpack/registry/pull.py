"""``pull``: a registry image into the store, verified blob by blob, usable at once by ``FROM`` and ``run``.

Steps: fetch the manifest (an index is resolved by platform); fetch the config and layers, several at
a time, each verified against its digest before it enters the store (see :mod:`.download`); record
what each layer holds and make its files runnable in place (see :mod:`ggufpack.build.layer_index`);
store the manifest's exact bytes, so the digest is the registry's; and only then move the ref. A
pull that fails at any step leaves the refs as they were.

Artifacts in other model formats (ModelPack, Docker Model Runner, Ollama) are recognised by their
media types and handed to an importer that turns them into a store image (see :mod:`.formats`).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ggufpack.build.cache import BuildCache
from ggufpack.build.layer_index import index_layer
from ggufpack.build.snapshot import Snapshot
from ggufpack.errors import GGUFPackError
from ggufpack.oci import mediatypes as mt
from ggufpack.oci.descriptor import Descriptor
from ggufpack.oci.platform import select_platform
from ggufpack.progress import QUIET, Bar, Progress
from ggufpack.refs import Reference
from ggufpack.registry.client import Manifest, RegistryClient
from ggufpack.registry.download import fetch_blob
from ggufpack.registry.known_blobs import KnownBlobs
from ggufpack.store import Store
from ggufpack.store.layout import digest_hex

JOBS = 4


@dataclass
class PullStats:
    fetched: int = 0  # blobs downloaded (fully or the rest of a resumed download)
    present: int = 0  # already in the store
    bytes_fetched: int = 0  # received from the registry
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, received: int | None) -> None:
        """Count one blob: ``received`` bytes fetched, or None when the store had it."""
        with self.lock:
            if received is None:
                self.present += 1
            else:
                self.fetched += 1
                self.bytes_fetched += received


@dataclass(frozen=True)
class PullResult:
    reference: str  # the ref set in the store
    digest: str  # of the stored manifest
    format: str  # image | modelpack | docker-ai | ollama
    stats: PullStats


@dataclass(frozen=True)
class RemoteImage:
    """A manifest fetched from a registry (an index already resolved) and its config, nothing else."""

    reference: Reference
    manifest: Manifest
    parsed: dict[str, Any]
    config: dict[str, Any]
    format: str


def artifact_format(manifest: dict[str, Any]) -> str:
    """``image``, ``modelpack``, ``docker-ai`` or ``ollama``, from the media types alone."""
    config_type = (manifest.get("config") or {}).get("mediaType", "")
    layer_types = [layer.get("mediaType", "") for layer in manifest.get("layers") or []]
    if manifest.get("artifactType") == mt.MODELPACK_ARTIFACT or config_type == mt.MODELPACK_CONFIG:
        return "modelpack"
    if config_type == mt.DOCKER_AI_CONFIG or any(t.startswith("application/vnd.docker.ai.") for t in layer_types):
        return "docker-ai"
    if any(t.startswith("application/vnd.ollama.image.") for t in layer_types):
        return "ollama"
    return "image"


def fetch_manifest(client: RegistryClient, ref: Reference, platform: str) -> tuple[Manifest, dict[str, Any]]:
    """The image manifest ``ref`` names, an index resolved for ``platform``."""
    reference = ref.digest or ref.tag or "latest"
    top = client.get_manifest(ref.repository, reference, mt.MANIFEST_TYPES)
    parsed = _parse(top, ref)
    if top.media_type in mt.INDEX_TYPES or "manifests" in parsed:
        child = select_platform(parsed, platform, str(ref))
        top = client.get_manifest(ref.repository, str(child.get("digest")), mt.MANIFEST_TYPES)
        parsed = _parse(top, ref)
        if top.media_type in mt.INDEX_TYPES or "manifests" in parsed:
            raise GGUFPackError(f"{ref}: the index for {platform} names another index; nested indexes are not pulled")
    if not top.media_type:
        top = Manifest(top.data, str(parsed.get("mediaType") or mt.OCI_MANIFEST), top.digest)
    return top, parsed


def inspect_remote(client: RegistryClient, ref: Reference, platform: str) -> RemoteImage:
    """Manifest and config of a registry image: two small requests, never the weights."""
    manifest, parsed = fetch_manifest(client, ref, platform)
    config_desc = manifest_blobs(parsed, str(ref))[0]
    config: dict[str, Any] = {}
    if config_desc.size <= 64 * 1024 * 1024:
        data = client.read_blob(ref.repository, config_desc.digest, config_desc.size)
        try:
            config = json.loads(data) if data.strip() else {}
        except ValueError:
            config = {}
        config = config if isinstance(config, dict) else {}
    return RemoteImage(ref, manifest, parsed, config, artifact_format(parsed))


def _parse(manifest: Manifest, ref: Reference) -> dict[str, Any]:
    try:
        parsed = json.loads(manifest.data)
    except ValueError:
        raise GGUFPackError(f"{ref}: the registry's manifest is not JSON") from None
    version = parsed.get("schemaVersion") if isinstance(parsed, dict) else None
    if version != 2:
        raise GGUFPackError(f"{ref}: unsupported manifest (schema version {version!r})")
    return parsed


def manifest_blobs(parsed: dict[str, Any], name: str) -> list[Descriptor]:
    """The config and the layers of a manifest, checked: a malformed one is an error, never a traceback."""
    config, layers = parsed.get("config"), parsed.get("layers") or []
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise GGUFPackError(f"{name}: the manifest has no config descriptor or its layers are not a list")
    try:
        blobs = [Descriptor.from_json(d) for d in [config, *layers]]
        for blob in blobs:
            digest_hex(blob.digest)
            if blob.size < 0 or not isinstance(blob.media_type, str):
                raise ValueError(f"size {blob.size!r}, media type {blob.media_type!r}")
    except (KeyError, TypeError, ValueError, AttributeError, GGUFPackError) as e:
        raise GGUFPackError(f"{name}: the manifest has a malformed descriptor ({e})") from None
    return blobs


def fetch_blobs(store: Store, client: RegistryClient, repository: str, blobs: list[Descriptor],
                progress: Progress, stats: PullStats, jobs: int = JOBS) -> None:
    """Download every blob not yet in the store, several at once, each verified before it lands."""
    known = KnownBlobs(store)
    total = sum(b.size for b in blobs)

    def one(blob: Descriptor, bar: Bar) -> None:
        stats.add(fetch_blob(store, client, repository, blob, bar))
        known.add(client.registry, repository, blob.digest)

    with progress.bar(f"pull {repository}", total) as bar, ThreadPoolExecutor(jobs) as pool:
        for future in [pool.submit(one, blob, bar) for blob in blobs]:
            future.result()


def _store_image(store: Store, manifest: Manifest, parsed: dict[str, Any], ref_name: str) -> None:
    """Record the layers of a pulled image, store its manifest bytes, then move the ref."""
    config = store.read_json(parsed["config"]["digest"])
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise GGUFPackError(f"{ref_name}: the image config has no rootfs.diff_ids list")
    layers = parsed.get("layers") or []
    if len(diff_ids) != len(layers):
        raise GGUFPackError(f"{ref_name}: the config lists {len(diff_ids)} layers, the manifest {len(layers)}")
    cache = BuildCache(store)
    snapshot = Snapshot()
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        snapshot = snapshot.apply(index_layer(store, cache, Descriptor.from_json(layer), diff_id).diff)
    store.put_bytes(manifest.data, manifest.digest)
    files = {node.digest for _, node in snapshot.items() if node.digest}
    store.set_ref(ref_name, Descriptor(manifest.media_type, manifest.digest, len(manifest.data)), files=files)


def pull_image(store: Store, ref: Reference, client: RegistryClient, *, platform: str,
               progress: Progress = QUIET, jobs: int = JOBS) -> PullResult:
    """Pull ``ref`` (a registry reference) into the store and name it ``ref``."""
    if ref.registry is None:
        raise GGUFPackError(f"{ref} names no registry: write REGISTRY/NAME[:TAG]")
    ref_name = str(ref)
    stats = PullStats()
    with store.lease():
        manifest, parsed = fetch_manifest(client, ref, platform)
        kind = artifact_format(parsed)
        blobs = manifest_blobs(parsed, ref_name)
        progress.log(f"pulling {ref_name} ({kind}, {len(blobs)} blob(s), {sum(b.size for b in blobs)} bytes)")
        fetch_blobs(store, client, ref.repository, blobs, progress, stats, jobs)
        if kind == "image":
            _store_image(store, manifest, parsed, ref_name)
            digest = manifest.digest
        else:
            from ggufpack.formats import import_artifact

            digest = import_artifact(store, kind, manifest.digest, parsed, ref_name, progress)
    return PullResult(ref_name, digest, kind, stats)
