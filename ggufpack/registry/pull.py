"""``pull``: a registry image into the store, verified blob by blob, usable at once by ``FROM`` and ``run``.

Steps: fetch the manifest (an index is resolved by platform); fetch the config and layers, several at
a time, each verified against its digest before it enters the store (see :mod:`.download`); record
what each layer holds and make its files runnable in place (see :mod:`ggufpack.image.layer_index`);
store the manifest's exact bytes, so the digest is the registry's; and only then move the ref. A
pull that fails at any step leaves the refs as they were.

Artifacts in other model formats (ModelPack, Docker Model Runner, Ollama) are recognised by their
media types and handed to an importer that turns them into a store image (see :mod:`.formats`).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ggufpack.errors import GGUFPackError
from ggufpack.image.archive import index_image_layers
from ggufpack.oci import mediatypes as mt
from ggufpack.oci.descriptor import Descriptor
from ggufpack.oci.platform import select_platform
from ggufpack.oci.reader import MAX_CONFIG_BYTES, ImageConfig, ImageManifest, decode_json, layer_diff_ids, parse_index
from ggufpack.progress import QUIET, Bar, Progress
from ggufpack.refs import Reference
from ggufpack.registry.client import Manifest, RegistryClient, manifest_document
from ggufpack.registry.download import fetch_blob
from ggufpack.registry.known_blobs import KnownBlobs
from ggufpack.store import Store

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
    #: of the manifest the registry served (``digest`` too, unless an artifact was imported as an image)
    remote_digest: str = ""


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
    config, layers = manifest.get("config"), manifest.get("layers")
    config_type = config.get("mediaType", "") if isinstance(config, dict) else ""
    layer_types = [str(layer.get("mediaType", "")) for layer in layers if isinstance(layer, dict)] \
        if isinstance(layers, list) else []
    if manifest.get("artifactType") == mt.MODELPACK_ARTIFACT or config_type == mt.MODELPACK_CONFIG:
        return "modelpack"
    if config_type == mt.DOCKER_AI_CONFIG or any(t.startswith("application/vnd.docker.ai.") for t in layer_types):
        return "docker-ai"
    if any(t.startswith("application/vnd.ollama.image.") for t in layer_types):
        return "ollama"
    return "image"


def _is_index(manifest: Manifest, parsed: dict[str, Any]) -> bool:
    return manifest.media_type in mt.INDEX_TYPES or parsed.get("mediaType") in mt.INDEX_TYPES or "manifests" in parsed


def fetch_manifest(client: RegistryClient, ref: Reference, platform: str) -> tuple[Manifest, dict[str, Any]]:
    """The image manifest ``ref`` names, an index resolved for ``platform``; both checked (an index's entries
    here, a manifest's descriptors by :class:`~ggufpack.oci.reader.ImageManifest` where they are used)."""
    reference = ref.digest or ref.tag or "latest"
    top = client.get_manifest(ref.repository, reference, mt.MANIFEST_TYPES)
    parsed = manifest_document(top.data, str(ref))
    if _is_index(top, parsed):
        entries = parse_index(parsed, str(ref))
        child = Descriptor.from_json(select_platform({"manifests": [e.to_json() for e in entries]}, platform, str(ref)))
        top = client.get_manifest(ref.repository, child.digest, mt.MANIFEST_TYPES)
        parsed = manifest_document(top.data, str(ref))
        if _is_index(top, parsed):
            raise GGUFPackError(f"{ref}: the index for {platform} names another index; nested indexes are not pulled")
    # The document's own mediaType (covered by the digest) wins over the Content-Type header (not covered).
    media_type = parsed.get("mediaType") or (top.media_type if top.media_type in mt.MANIFEST_TYPES else mt.OCI_MANIFEST)
    return Manifest(top.data, media_type, top.digest), parsed


def inspect_remote(client: RegistryClient, ref: Reference, platform: str) -> RemoteImage:
    """Manifest and config of a registry image: two small requests, never the weights."""
    manifest, parsed = fetch_manifest(client, ref, platform)
    config_desc = ImageManifest.parse(parsed, str(ref)).config
    config: dict[str, Any] = {}
    if config_desc.size <= MAX_CONFIG_BYTES:
        data = client.read_blob(ref.repository, config_desc.digest, config_desc.size)
        try:
            config = decode_json(data, f"{ref}: the image config") if data.strip() else {}
        except GGUFPackError:
            config = {}
        config = config if isinstance(config, dict) else {}
    return RemoteImage(ref, manifest, parsed, config, artifact_format(parsed))


def check_config_size(config: Descriptor, name: str) -> None:
    """The one rule for configs, at pull as at remote inspect: at most :data:`MAX_CONFIG_BYTES` bytes."""
    if config.size > MAX_CONFIG_BYTES:
        raise GGUFPackError(f"{name}: the image config is {config.size} bytes, more than the {MAX_CONFIG_BYTES} a "
                            "config may have; refused (nothing was downloaded)")


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


def _store_image(store: Store, manifest: Manifest, blobs: list[Descriptor], ref_name: str) -> None:
    """Record the layers of a pulled image, store its manifest bytes, then move the ref."""
    config_desc, layers = blobs[0], blobs[1:]
    config = decode_json(store.read_blob(config_desc.digest), f"{ref_name}: the image config")
    ImageConfig.parse(config, ref_name)  # every field list, inspect, run and FROM use, checked (oci/reader.py)
    diff_ids = layer_diff_ids(config, ref_name, len(layers))
    # every layer indexed, then the symlink rule the build applies (oci/symlinks.py): as ggufpack load does
    files = index_image_layers(store, layers, diff_ids, ref_name)
    store.put_bytes(manifest.data, manifest.digest)
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
        blobs = ImageManifest.parse(parsed, ref_name).blobs
        check_config_size(blobs[0], ref_name)
        kind = artifact_format(parsed)
        progress.log(f"pulling {ref_name} ({kind}, {len(blobs)} blob(s), {sum(b.size for b in blobs)} bytes)")
        fetch_blobs(store, client, ref.repository, blobs, progress, stats, jobs)
        if kind == "image":
            _store_image(store, manifest, blobs, ref_name)
            digest = manifest.digest
        else:
            from ggufpack.formats import import_artifact

            digest = import_artifact(store, kind, manifest.digest, parsed, ref_name, progress)
    return PullResult(ref_name, digest, kind, stats, manifest.digest)
