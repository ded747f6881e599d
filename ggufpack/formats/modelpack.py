"""CNCF ModelPack (model-spec v1): export a store image as an artifact, import one as a store image.

The artifact: an OCI manifest with ``artifactType`` ``application/vnd.cncf.model.manifest.v1+json``;
a config ``application/vnd.cncf.model.config.v1+json`` (``descriptor`` with the model's name,
authors, licenses; ``config`` with ``format: gguf``, ``paramSize``, ``precision``, ``quantization``;
``modelfs`` with one diff ID per layer); one **uncompressed raw** layer per file, GGUF files as
``weight.v1.raw``, documents as ``doc.v1.raw``, other small files as ``weight.config.v1.raw``, each
with ``org.cncf.model.filepath``. A raw layer is the file itself, so its blob is a hard link to the
runnable file already in the store: exporting costs no bytes, and a runtime that mounts the
artifact (Kubernetes image volumes) sees plain GGUF files.

ModelPack has no CMD: ours travels in the manifest annotation ``io.ggufpack.image.cmd`` so that
an import gets the same llama-server arguments back; an artifact made elsewhere gets ``-m`` on its
largest GGUF.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from ggufpack.errors import GGUFPackError
from ggufpack.formats.commit import ImageFile, commit_files
from ggufpack.gguf_info.facts import file_type_name
from ggufpack.image.load import load_image
from ggufpack.oci import mediatypes as mt
from ggufpack.oci.descriptor import Descriptor
from ggufpack.oci.image import build_manifest
from ggufpack.oci.platform import DEFAULT_PLATFORM
from ggufpack.oci.reader import ImageConfig
from ggufpack.progress import Progress
from ggufpack.store import Store

FILEPATH = "org.cncf.model.filepath"
FILE_METADATA = "org.cncf.model.file.metadata+json"
CMD_ANNOTATION = "io.ggufpack.image.cmd"
_DOC_NAMES = ("readme", "license", "licence", "notice", "copying", "changelog")
_GGUF_MAGIC = b"GGUF"
#: ``precision`` for the unquantized GGUF file types
_PRECISION = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}


def param_size(parameters: int) -> str:
    """ModelPack's ``<count><scale>`` with at most one decimal: ``494.0M`` → ``494m``, ``7.24B`` → ``7.2b``."""
    for scale, letter in ((10**15, "q"), (10**12, "t"), (10**9, "b"), (10**6, "m"), (10**3, "k")):
        if parameters >= scale:
            count = f"{parameters / scale:.1f}".removesuffix(".0")
            return f"{count}{letter}"
    return str(parameters)


def _media_type(store: Store, path: str, digest: str) -> str:
    with store.file_path(digest).open("rb") as f:
        if f.read(4) == _GGUF_MAGIC:
            return mt.MODELPACK_WEIGHT_RAW
    name = posixpath.basename(path).lower()
    if name.startswith(_DOC_NAMES) or name.endswith((".md", ".rst")):
        return mt.MODELPACK_DOC_RAW
    return mt.MODELPACK_WEIGHT_CONFIG_RAW


def _model_config(config: ImageConfig, diff_ids: list[str]) -> dict[str, Any]:
    labels, model = config.labels, config.model
    descriptor: dict[str, Any] = {}
    for key, label in (("name", "gguf.model.name"), ("description", "gguf.model.description"),
                       ("vendor", "gguf.model.vendor"), ("docURL", "gguf.model.url"),
                       ("family", "gguf.model.architecture")):
        if labels.get(label):
            descriptor[key] = labels[label]
    for key, label in (("authors", "gguf.model.authors"), ("licenses", "gguf.model.licenses")):
        if labels.get(label):
            descriptor[key] = [part.strip() for part in labels[label].split(",") if part.strip()]
    if config.created:
        descriptor["createdAt"] = config.created
    file_type = file_type_name(model.file_type) if model is not None and model.file_type is not None else None
    technical: dict[str, Any] = {"architecture": "transformer", "format": "gguf"}
    if model is not None and model.parameters:
        technical["paramSize"] = param_size(model.parameters)
    if file_type:
        technical["precision"] = _PRECISION.get(file_type, "int8" if file_type == "Q8_0" else "mixed")
        if file_type not in _PRECISION:
            technical["quantization"] = file_type
    return {"descriptor": descriptor, "config": technical, "modelfs": {"type": "layers", "diffIds": diff_ids}}


def export_modelpack(store: Store, ref_or_id: str) -> Descriptor:
    """Write the ModelPack artifact of a stored image into the store; its manifest descriptor."""
    record = store.resolve(ref_or_id)
    image = load_image(store, record.descriptor.digest, DEFAULT_PLATFORM)
    config = image.config
    labels = dict(config.labels)
    layers: list[Descriptor] = []
    for path, node in sorted(image.snapshot.items()):
        if node.kind != "file" or node.digest is None:
            continue
        store.blob_from_file(node.digest)
        metadata = {"name": path, "mode": node.mode, "uid": node.uid, "gid": node.gid, "size": node.size,
                    "typeflag": 48}
        layers.append(Descriptor(
            _media_type(store, path, node.digest), node.digest, node.size,
            annotations={FILEPATH: path, FILE_METADATA: json.dumps(metadata, sort_keys=True)},
        ))
    if not any(layer.media_type == mt.MODELPACK_WEIGHT_RAW for layer in layers):
        raise GGUFPackError(f"{ref_or_id}: no GGUF file to export as a ModelPack weight")
    body = _model_config(config, [layer.digest for layer in layers])
    config_digest, config_size, _ = store.put_json(body)
    annotations = {**labels, CMD_ANNOTATION: json.dumps(list(config.cmd or ()))}
    out = build_manifest(Descriptor(mt.MODELPACK_CONFIG, config_digest, config_size), layers, annotations,
                         artifact_type=mt.MODELPACK_ARTIFACT)
    digest, size, _ = store.put_json(out)
    return Descriptor(mt.OCI_MANIFEST, digest, size, artifact_type=mt.MODELPACK_ARTIFACT)


def import_modelpack(store: Store, manifest_digest: str, manifest: dict[str, Any], ref_name: str,
                     progress: Progress) -> str:
    """A pulled ModelPack artifact (blobs in the store) → a store image named ``ref_name``."""
    files: list[ImageFile] = []
    weights: list[tuple[int, str]] = []
    for layer in manifest.get("layers") or []:
        media_type = layer.get("mediaType", "")
        if not media_type.endswith(".raw"):
            raise GGUFPackError(f"{ref_name}: ModelPack layer type {media_type} is not supported (only raw layers)")
        annotations = layer.get("annotations") or {}
        path = annotations.get(FILEPATH) or annotations.get("org.opencontainers.image.title")
        if not path:
            raise GGUFPackError(f"{ref_name}: a ModelPack layer without {FILEPATH}")
        files.append(ImageFile("/" + path.lstrip("/"), layer["digest"]))
        if media_type == mt.MODELPACK_WEIGHT_RAW and _is_gguf(store, layer["digest"]):
            weights.append((int(layer["size"]), "/" + path.lstrip("/")))
    annotations = dict(manifest.get("annotations") or {})
    cmd = annotated_cmd(annotations, ref_name)
    annotations.pop(CMD_ANNOTATION, None)
    if not cmd:
        if not weights:
            raise GGUFPackError(f"{ref_name}: the ModelPack artifact holds no GGUF weight")
        cmd = ["-m", max(weights)[1]]
    return commit_files(store, files, cmd, annotations, ref_name, progress, kind="modelpack",
                        artifact=manifest_digest)


def annotated_cmd(annotations: dict[str, Any], ref_name: str) -> list[str]:
    """The CMD ggufpack's export wrote into the manifest annotations (empty when there is none)."""
    cmd_text = annotations.get(CMD_ANNOTATION, "")
    try:
        cmd = json.loads(cmd_text) if cmd_text else []
    except ValueError:
        cmd = None
    if not isinstance(cmd, list) or not all(isinstance(arg, str) for arg in cmd):
        raise GGUFPackError(f"{ref_name}: the {CMD_ANNOTATION} annotation is not a JSON list of strings")
    return cmd


def _is_gguf(store: Store, digest: str) -> bool:
    with store.blob_path(digest).open("rb") as f:
        return f.read(4) == _GGUF_MAGIC
