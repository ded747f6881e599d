"""Media type strings: the ones we write, and the ones we meet in other tools' images.

Kept as plain constants (facts, not behaviour) so every module spells them the same way.
"""

from __future__ import annotations

# OCI image spec.
OCI_LAYOUT_VERSION = "1.0.0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

# Docker image manifest v2 schema 2 (met when pulling base images built by Docker).
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"

# CNCF ModelPack (github.com/modelpack/model-spec).
MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODELPACK_WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
MODELPACK_WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
MODELPACK_DOC_RAW = "application/vnd.cncf.model.doc.v1.raw"

# Docker Model Runner (docker model push/pull).
DOCKER_AI_CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"
DOCKER_AI_GGUF = "application/vnd.docker.ai.gguf.v3"
DOCKER_AI_LICENSE = "application/vnd.docker.ai.license"
DOCKER_AI_MMPROJ = "application/vnd.docker.ai.mmproj"
DOCKER_AI_CHAT_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"

# Ollama registry (registry.ollama.ai); the config uses the Docker config media type.
OLLAMA_MODEL = "application/vnd.ollama.image.model"
OLLAMA_PROJECTOR = "application/vnd.ollama.image.projector"
OLLAMA_ADAPTER = "application/vnd.ollama.image.adapter"
OLLAMA_TEMPLATE = "application/vnd.ollama.image.template"
OLLAMA_SYSTEM = "application/vnd.ollama.image.system"
OLLAMA_PARAMS = "application/vnd.ollama.image.params"
OLLAMA_LICENSE = "application/vnd.ollama.image.license"
OLLAMA_MESSAGES = "application/vnd.ollama.image.messages"

GZIP_LAYER_TYPES = frozenset({OCI_LAYER_TAR_GZIP, DOCKER_LAYER_TAR_GZIP})
PLAIN_LAYER_TYPES = frozenset({OCI_LAYER_TAR, DOCKER_LAYER_TAR})

#: what a client accepts when it asks a registry for a manifest, images and indexes of both families
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
