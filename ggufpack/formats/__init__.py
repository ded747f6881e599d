"""Model artifact formats other than our own image: CNCF ModelPack (export and import), Docker Model
Runner and Ollama (import).

An imported artifact becomes an ordinary store image (see :mod:`.commit`), so ``list``,
``inspect``, ``estimate``, ``run`` and ``FROM`` treat it like one we built.
"""

from __future__ import annotations

from typing import Any

from ggufpack.errors import GGUFPackError
from ggufpack.oci.reader import ImageManifest
from ggufpack.progress import Progress
from ggufpack.store import Store


def import_artifact(store: Store, kind: str, manifest_digest: str, manifest: dict[str, Any], ref_name: str,
                    progress: Progress) -> str:
    """Turn a pulled artifact (its blobs already in the store) into a store image named ``ref_name``."""
    ImageManifest.parse(manifest, ref_name)  # every descriptor and annotation an importer reads, checked
    if kind == "modelpack":
        from ggufpack.formats.modelpack import import_modelpack as importer
    elif kind == "docker-ai":
        from ggufpack.formats.dockerai import import_docker_ai as importer
    elif kind == "ollama":
        from ggufpack.formats.ollama import import_ollama as importer
    else:
        raise GGUFPackError(f"{ref_name}: no importer for {kind} artifacts")
    return importer(store, manifest_digest, manifest, ref_name, progress)
