"""Model artifact formats other than our own image: CNCF ModelPack (export and import), Docker Model
Runner and Ollama (import).

An imported artifact becomes an ordinary store image (see :mod:`.commit`), so ``list``,
``inspect``, ``estimate``, ``run`` and ``FROM`` treat it like one we built.
"""

from __future__ import annotations

from typing import Any

from ggufpack.errors import GGUFPackError
from ggufpack.oci import mediatypes as mt
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


#: per artifact format: the layer types that hold GGUF weights, and where its config states each model
#: fact (alternatives in order, each a path of keys)
_WEIGHT_TYPES = {
    "modelpack": frozenset({mt.MODELPACK_WEIGHT_RAW}),
    "docker-ai": frozenset({mt.DOCKER_AI_GGUF, mt.DOCKER_AI_MMPROJ}),
    "ollama": frozenset({mt.OLLAMA_MODEL, mt.OLLAMA_PROJECTOR, mt.OLLAMA_ADAPTER}),
}
_FACTS: dict[str, dict[str, tuple[tuple[str, ...], ...]]] = {
    "modelpack": {"architecture": (("config", "architecture"),), "parameters": (("config", "paramSize"),),
                  "quantization": (("config", "quantization"), ("config", "precision")),
                  "created": (("descriptor", "createdAt"),)},
    "docker-ai": {"architecture": (("config", "architecture"),), "parameters": (("config", "parameters"),),
                  "quantization": (("config", "quantization"),), "created": (("descriptor", "created"),)},
    "ollama": {"architecture": (("model_family",),), "parameters": (("model_type",),),
               "quantization": (("file_type",),), "created": (("created",),)},
}
#: the annotations that name a layer's file, in the order they are read
_PATH_ANNOTATIONS = ("org.cncf.model.filepath", "org.opencontainers.image.title")
_MAX_FACT_CHARS = 200


def _fact(config: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> str | None:
    for path in paths:
        value: Any = config
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)[:_MAX_FACT_CHARS]
    return None


def artifact_summary(kind: str, manifest: ImageManifest, config: dict[str, Any], ref_name: str) -> dict[str, Any]:
    """What the manifest and config of a ``kind`` artifact still in a registry tell of the image ``pull``
    will make of it: the bytes of its GGUF layers, its layers (each named by its file path annotation,
    else its media type), the model facts its config states (None where it states none), and, for a
    ModelPack artifact, its labels and its CMD when the artifact carries them (ggufpack's export does;
    else the CMD is None: the import derives it from the layers' contents)."""
    weights = _WEIGHT_TYPES.get(kind, frozenset())
    facts = {name: _fact(config, paths) for name, paths in _FACTS.get(kind, {}).items()}
    cmd, labels = None, {}
    if kind == "modelpack":
        from ggufpack.formats.modelpack import CMD_ANNOTATION, annotated_cmd

        cmd = annotated_cmd(dict(manifest.annotations), ref_name) or None
        labels = {k: v for k, v in manifest.annotations.items() if k != CMD_ANNOTATION}
    layers = [{"digest": layer.digest, "mediaType": layer.media_type, "size": layer.size,
               "created_by": next((layer.annotations[a] for a in _PATH_ANNOTATIONS if layer.annotations.get(a)),
                                  layer.media_type)} for layer in manifest.layers]
    return {"format": kind, "size": sum(layer.size for layer in manifest.layers if layer.media_type in weights),
            "cmd": cmd, "labels": labels, "layers": layers, **facts}
