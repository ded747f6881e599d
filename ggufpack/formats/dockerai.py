"""Docker Model Runner artifacts (``application/vnd.docker.ai.*``) → store images.

The artifact: an OCI manifest whose config is ``application/vnd.docker.ai.model.config.v0.1+json``
(``{"config": {"format": "gguf", "quantization", "parameters", "architecture", ...}, "descriptor":
{"created"}, "rootfs": ...}``) and whose layers are the raw files: ``vnd.docker.ai.gguf.v3`` (the
model, possibly several shards), ``vnd.docker.ai.mmproj`` (a multimodal projector),
``vnd.docker.ai.chat.template.jinja`` and ``vnd.docker.ai.license``. File names come from the
``org.opencontainers.image.title`` annotation when the layer has one.

The image: the files under ``/models``, ``/licenses``, with a CMD that loads the model (the first
shard), the projector (``--mmproj``), and the chat template (``--chat-template-file``), and the
context size the config names (``context_size``) as ``-c``.
"""

from __future__ import annotations

import posixpath
from typing import Any

from ggufpack.errors import GGUFPackError
from ggufpack.formats.synthesize import ImageFile, synthesize_image
from ggufpack.oci import mediatypes as mt
from ggufpack.progress import Progress
from ggufpack.store import Store

_TITLE = "org.opencontainers.image.title"
#: media type → (directory in the image, default file name)
_PLACES = {
    mt.DOCKER_AI_GGUF: ("/models", "model.gguf"),
    mt.DOCKER_AI_MMPROJ: ("/models", "mmproj.gguf"),
    mt.DOCKER_AI_CHAT_TEMPLATE: ("/models", "template.jinja"),
    mt.DOCKER_AI_LICENSE: ("/licenses", "LICENSE"),
}


def _name(layer: dict[str, Any], default: str, index: int) -> str:
    title = posixpath.basename((layer.get("annotations") or {}).get(_TITLE, "")) or default
    return title if index == 0 or title != default else f"{index}-{default}"


def import_docker_ai(store: Store, manifest_digest: str, manifest: dict[str, Any], ref_name: str,
                     progress: Progress) -> str:
    """A pulled Docker Model Runner artifact (blobs in the store) → a store image named ``ref_name``."""
    config = store.read_json(manifest["config"]["digest"]) if manifest.get("config") else {}
    model_config = config.get("config") or {}
    if model_config.get("format", "gguf") != "gguf":
        raise GGUFPackError(f"{ref_name}: a {model_config.get('format')} model; ggufpack imports GGUF models only")
    files: list[ImageFile] = []
    by_type: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for layer in manifest.get("layers") or []:
        media_type = layer.get("mediaType", "")
        place = _PLACES.get(media_type)
        if place is None:
            progress.log(f"  skipping a layer of type {media_type} (not used by llama.cpp)")
            continue
        directory, default = place
        index = counts.get(media_type, 0)
        counts[media_type] = index + 1
        path = posixpath.join(directory, _name(layer, default, index))
        files.append(ImageFile(path, layer["digest"]))
        by_type.setdefault(media_type, []).append(path)
    models = sorted(by_type.get(mt.DOCKER_AI_GGUF, []))
    if not models:
        raise GGUFPackError(f"{ref_name}: the Docker model artifact holds no GGUF layer")
    cmd = ["-m", models[0]]
    if by_type.get(mt.DOCKER_AI_MMPROJ):
        cmd += ["--mmproj", by_type[mt.DOCKER_AI_MMPROJ][0]]
    if by_type.get(mt.DOCKER_AI_CHAT_TEMPLATE):
        cmd += ["--chat-template-file", by_type[mt.DOCKER_AI_CHAT_TEMPLATE][0]]
    if model_config.get("context_size"):
        cmd += ["-c", str(int(model_config["context_size"]))]
    labels = {"io.ggufpack.imported.format": "docker-ai", "io.ggufpack.imported.digest": manifest_digest}
    return synthesize_image(store, files, cmd, labels, ref_name, progress)
