"""Ollama-style manifests (layers ``application/vnd.ollama.image.*``) → store images.

An Ollama model is a Docker v2 manifest whose layers are the Modelfile's parts: ``model`` (GGUF),
``projector``, ``adapter``, ``template`` (a Go template, which llama.cpp cannot run: kept as a file,
the GGUF's own Jinja template is what llama-server uses), ``system`` (the system prompt), ``params``
(JSON sampling options), ``license`` and ``messages``.

The image: files under ``/models`` (and ``/licenses``), and a CMD that loads the model with its
projector and adapters, passes the system prompt as ``--system-prompt-file``, and maps the params
llama-server has flags for (``num_ctx`` → ``-c``, ``temperature`` → ``--temp``..., each ``stop`` word
→ ``-r``). Params without an equivalent are reported and left out.
"""

from __future__ import annotations

import json
from typing import Any

from ggufpack.errors import GGUFPackError
from ggufpack.formats.commit import ImageFile, commit_files
from ggufpack.image.stored import read_json_blob
from ggufpack.oci import mediatypes as mt
from ggufpack.progress import Progress
from ggufpack.store import Store

#: the largest params layer read (Ollama's are a few hundred bytes)
MAX_PARAMS_BYTES = 1 << 20
#: Ollama params → llama-server flags
PARAM_FLAGS = {
    "num_ctx": "-c", "num_batch": "-b", "num_predict": "-n", "temperature": "--temp", "top_k": "--top-k",
    "top_p": "--top-p", "min_p": "--min-p", "typical_p": "--typical", "repeat_penalty": "--repeat-penalty",
    "repeat_last_n": "--repeat-last-n", "presence_penalty": "--presence-penalty",
    "frequency_penalty": "--frequency-penalty", "seed": "--seed", "mirostat": "--mirostat",
    "mirostat_tau": "--mirostat-ent", "mirostat_eta": "--mirostat-lr", "num_gpu": "-ngl",
}
_FILES = {
    mt.OLLAMA_MODEL: "/models/model.gguf", mt.OLLAMA_PROJECTOR: "/models/projector.gguf",
    mt.OLLAMA_TEMPLATE: "/models/template.gotmpl", mt.OLLAMA_SYSTEM: "/models/system.txt",
    mt.OLLAMA_LICENSE: "/licenses/LICENSE", mt.OLLAMA_MESSAGES: "/models/messages.json",
}


def params_flags(params: dict[str, Any], progress: Progress) -> list[str]:
    """llama-server arguments for the Ollama params that have one, in a fixed order."""
    args: list[str] = []
    for key in sorted(params):
        flag = PARAM_FLAGS.get(key)
        value = params[key]
        if key == "stop" and isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            for word in value:  # llama-server's stop strings: --reverse-prompt, once per word
                args += ["-r", word]
            continue
        if flag is None or isinstance(value, (list, dict)):
            progress.log(f"  Ollama parameter {key}={json.dumps(value)} has no llama-server flag; left out")
            continue
        args += [flag, str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def import_ollama(store: Store, manifest_digest: str, manifest: dict[str, Any], ref_name: str,
                  progress: Progress) -> str:
    """A pulled Ollama model (blobs in the store) → a store image named ``ref_name``."""
    files: list[ImageFile] = []
    adapters: list[str] = []
    params: dict[str, Any] = {}
    present: dict[str, str] = {}
    for layer in manifest.get("layers") or []:
        media_type = layer.get("mediaType", "")
        if media_type == mt.OLLAMA_ADAPTER:
            path = f"/models/adapter-{len(adapters)}.gguf"
            adapters.append(path)
        elif media_type == mt.OLLAMA_PARAMS:
            params = read_json_blob(store, layer["digest"], f"{ref_name}: the Ollama params layer", MAX_PARAMS_BYTES)
            if not isinstance(params, dict):
                raise GGUFPackError(f"{ref_name}: the Ollama params layer is not a JSON object")
            continue
        elif media_type in _FILES:
            if media_type in present:
                raise GGUFPackError(f"{ref_name}: two {media_type} layers")
            path = _FILES[media_type]
        else:
            progress.log(f"  skipping a layer of type {media_type}")
            continue
        present[media_type] = path
        files.append(ImageFile(path, layer["digest"]))
    if mt.OLLAMA_MODEL not in present:
        raise GGUFPackError(f"{ref_name}: the Ollama manifest holds no model layer")
    cmd = ["-m", present[mt.OLLAMA_MODEL]]
    if mt.OLLAMA_PROJECTOR in present:
        cmd += ["--mmproj", present[mt.OLLAMA_PROJECTOR]]
    for adapter in adapters:
        cmd += ["--lora", adapter]
    if mt.OLLAMA_SYSTEM in present:
        cmd += ["--system-prompt-file", present[mt.OLLAMA_SYSTEM]]
    cmd += params_flags(params, progress)
    return commit_files(store, files, cmd, {}, ref_name, progress, kind="ollama", artifact=manifest_digest)
