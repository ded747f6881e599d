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
    ElidedString,
    GGUFArray,
    GGUFHeader,
    TensorInfo,
    check_tensor_data,
    merge_headers,
    missing_shards,
    read_gguf,
    read_header,
    read_header_file,
    shard_name,
    shard_paths,
    shards_named_after,
    split_names,
)
from ggufpack.gguf_info.labels import model_labels

__all__ = [
    "ElidedArray",
    "ElidedString",
    "GGUFArray",
    "GGUFHeader",
    "ModelFacts",
    "TensorInfo",
    "check_tensor_data",
    "file_type_name",
    "format_bpw",
    "format_parameters",
    "header_from_config_entry",
    "infer_file_type",
    "merge_headers",
    "missing_shards",
    "model_config_entry",
    "model_facts",
    "model_labels",
    "read_gguf",
    "read_header",
    "read_header_file",
    "shard_name",
    "shard_paths",
    "shards_named_after",
    "split_names",
]
