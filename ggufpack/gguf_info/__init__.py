"""GGUF header facts: read headers without the weights, describe models, label images."""

from __future__ import annotations

from ggufpack.gguf_info.facts import (
    ModelFacts,
    file_type_name,
    format_bpw,
    format_parameters,
    header_from_config_entry,
    infer_file_type,
    model_config_entry,
    model_facts,
)
from ggufpack.gguf_info.header import (
    ElidedArray,
    GGUFArray,
    GGUFHeader,
    TensorInfo,
    merge_headers,
    read_gguf,
    read_header,
    read_header_file,
    shard_paths,
)
from ggufpack.gguf_info.labels import model_labels

__all__ = [
    "ElidedArray",
    "GGUFArray",
    "GGUFHeader",
    "ModelFacts",
    "TensorInfo",
    "file_type_name",
    "format_bpw",
    "format_parameters",
    "header_from_config_entry",
    "infer_file_type",
    "merge_headers",
    "model_config_entry",
    "model_facts",
    "model_labels",
    "read_gguf",
    "read_header",
    "read_header_file",
    "shard_paths",
]
