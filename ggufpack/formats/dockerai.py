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

from ggufpack.errors import GGUFPackError, shown
from ggufpack.formats.commit import ImageFile, commit_files
from ggufpack.image.stored import read_json_blob
from ggufpack.oci import mediatypes as mt
from ggufpack.oci.reader import MAX_CONFIG_BYTES
from ggufpack.progress import Progress
from ggufpack.store import Store

_TITLE = "org.opencontainers.image.title"
#: the largest context_size taken from a config: llama.cpp's n_ctx is a 32-bit count
MAX_CONTEXT = (1 << 31) - 1
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


def _model_config(config: Any, ref_name: str) -> dict[str, Any]:
    """The ``config`` object of a Docker model config, with the fields the import uses checked."""
    where = f"{ref_name}: the Docker model config"
    if not isinstance(config, dict):
        raise GGUFPackError(f"{where} is {shown(config)}, not a JSON object")
    model_config = config.get("config")
    if model_config is None:
        return {}
    if not isinstance(model_config, dict):
        raise GGUFPackError(f"{where}'s config is {shown(model_config)}, not an object")
    context = model_config.get("context_size")
    if context is not None and (type(context) is not int or not 0 <= context <= MAX_CONTEXT):
        raise GGUFPackError(f"{where}'s context_size is {shown(context)}, not a number of tokens (0 to {MAX_CONTEXT})")
    if not isinstance(model_config.get("format", "gguf"), str):
        raise GGUFPackError(f"{where}'s format is {shown(model_config.get('format'))}, not a string")
    return model_config


def import_docker_ai(store: Store, manifest_digest: str, manifest: dict[str, Any], ref_name: str,
                     progress: Progress) -> str:
    """A pulled Docker Model Runner artifact (blobs in the store) → a store image named ``ref_name``."""
    model_config = _model_config(read_json_blob(store, manifest["config"]["digest"], f"{ref_name}: the Docker model "
                                                "config", MAX_CONFIG_BYTES), ref_name)
    if model_config.get("format", "gguf") != "gguf":
        raise GGUFPackError(f"{ref_name}: a {shown(model_config.get('format'))} model; ggufpack imports GGUF "
                            "models only")
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
        cmd += ["-c", str(model_config["context_size"])]
    return commit_files(store, files, cmd, {}, ref_name, progress, kind="docker-ai", artifact=manifest_digest)
