"""``general.*`` metadata from the model card (``README.md`` front matter) and the configs.

gguf-py's :class:`gguf.Metadata` already knows the heuristics (name, basename, size label, license,
base models, tags, languages, datasets from the card; sampling defaults from
``generation_config.json``), so this module only feeds it and keeps its failures from being fatal:
a broken model card costs the metadata, never the conversion.
"""

from __future__ import annotations

import logging
from pathlib import Path

import gguf

log = logging.getLogger(__name__)


def load_metadata(
    model_dir: Path, total_params: int, warnings: list[str], model_name: str | None = None,
) -> gguf.Metadata:
    """The model's ``gguf.Metadata``, with a name that never comes out empty.

    ``model_name``, when given, overrides whatever name the card or the directory suggests.
    """
    try:
        metadata = gguf.Metadata.load(None, model_dir, model_name, total_params)
    except Exception as e:  # a malformed card (bad YAML, odd types) must not stop the conversion
        warnings.append(f"{model_dir / 'README.md'}: model card ignored: {e}")
        metadata = gguf.Metadata()
    if not metadata.name:
        metadata.name = model_name or model_dir.name
    if metadata.size_label is None and total_params > 0:
        metadata.size_label = gguf.size_label(total_params, 0, 0, 0)
    return metadata


def write_metadata(writer: gguf.GGUFWriter, metadata: gguf.Metadata) -> None:
    """Add the ``general.*`` keys to ``writer``."""
    metadata.set_gguf_meta_model(writer)
