"""``build --output``: an image copied out of the store as an OCI layout directory or archive."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from ..errors import UsageError
from ..oci.descriptor import Descriptor, canonical_json
from ..oci.mediatypes import OCI_INDEX, OCI_LAYOUT_VERSION
from ..oci.reader import ImageManifest
from ..store import Store
from ..util.locking import try_lock


def parse_output(spec: str) -> tuple[str, Path]:
    """``type=oci,dest=DIR`` / ``type=oci-archive,dest=FILE`` → (type, dest)."""
    fields = dict(part.partition("=")[::2] for part in spec.split(","))
    kind, dest = fields.get("type"), fields.get("dest")
    if kind not in ("oci", "oci-archive") or not dest:
        raise UsageError(f"--output {spec!r}: write type=oci,dest=DIR or type=oci-archive,dest=FILE")
    return kind, Path(dest)


def _blobs(store: Store, manifest_digest: str) -> list[str]:
    manifest = ImageManifest.parse(store.read_json(manifest_digest), f"stored manifest {manifest_digest}")
    return [manifest_digest, *(blob.digest for blob in manifest.blobs)]


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_layout(store: Store, descriptor: Descriptor, directory: Path, ref: str | None) -> None:
    """An OCI image layout holding just this image (blobs hard-linked when on the same filesystem)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for digest in _blobs(store, descriptor.digest):
        _link_or_copy(store.blob_path(digest), blobs / digest.split(":", 1)[1])
    annotations = {"org.opencontainers.image.ref.name": ref} if ref else {}
    entry = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size, annotations)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry.to_json()]}
    (directory / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    (directory / "index.json").write_bytes(canonical_json(index))


def _archive(source: Path, dest: Path) -> None:
    """A deterministic tar of a layout directory (sorted, root-owned, mtime 0)."""
    temp = dest.with_name(dest.name + ".partial")
    with tarfile.open(temp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in source.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(source).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    os.replace(temp, dest)


def export_image(store: Store, descriptor: Descriptor, spec: str, *, ref: str | None) -> Path:
    """Export per an ``--output`` spec; returns the path written."""
    kind, dest = parse_output(spec)
    tag = ref.rsplit(":", 1)[-1] if ref and "@" not in ref else None
    if kind == "oci":
        with store.lease():  # an untagged image's blobs must not be pruned while they are copied
            write_layout(store, descriptor, dest, tag)
        return dest
    staging = store.layout.ingest / f"export-{descriptor.hex[:16]}-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    fd = os.open(staging, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try_lock(fd)  # prune removes only the staging directories of dead processes
        with store.lease():
            write_layout(store, descriptor, staging, tag)
            _archive(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(fd)
    return dest
