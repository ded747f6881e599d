"""The ``gguf.model.*`` image labels, and their ``org.opencontainers.image.*`` mirrors.

Labels describe the image's main model. A user's ``LABEL`` always wins: no key the user set is
touched, and when the user set one key of a mirrored pair (``gguf.model.name`` or
``org.opencontainers.image.title``) the other key takes the user's value rather than the model's,
so the pair never disagrees.
"""

from __future__ import annotations

from collections.abc import Mapping

from gguf.constants import Keys

from ggufpack.gguf_info.facts import Headers, as_header, format_bpw, format_parameters, model_facts
from ggufpack.gguf_info.header import GGUFHeader

DEFAULT_VENDOR = "ggufpack"
_OCI = "org.opencontainers.image."
MAX_LABEL_CHARS = 4096
"""Longest label taken from a model's metadata: labels are also manifest annotations, and registries (and
ggufpack's own pull) refuse manifests over 4 MiB, so a 100 MB ``general.description`` is cut."""


def _capped(value: str) -> str:
    return value if len(value) <= MAX_LABEL_CHARS else value[: MAX_LABEL_CHARS - 3] + "..."


def _general(header: GGUFHeader, *keys: str) -> str:
    """The first of ``keys`` that holds a non-blank string."""
    for key in keys:
        value = header.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return _capped(value.strip())
    return ""


def model_labels(headers: Headers, *, user_labels: Mapping[str, str]) -> dict[str, str]:
    """The image's label set: ``user_labels`` plus the model's labels that the user did not set.

    Only labels with a value are added.
    """
    header = as_header(headers)
    facts = model_facts(header)
    own: dict[str, str] = {
        "gguf.model.architecture": _capped(facts.architecture),
        "gguf.model.parameters": format_parameters(facts.parameters) if facts.parameters else "",
        "gguf.model.bpw": format_bpw(facts.bits_per_weight) if facts.parameters else "",
        "gguf.model.filetype": facts.file_type,
        "gguf.model.usage": facts.usage,
    }
    mirrored: dict[tuple[str, str], str] = {
        ("gguf.model.name", _OCI + "title"): _general(header, Keys.General.NAME),
        ("gguf.model.authors", _OCI + "authors"): _general(header, Keys.General.AUTHOR),
        ("gguf.model.url", _OCI + "url"): _general(header, Keys.General.URL, Keys.General.REPO_URL),
        ("gguf.model.description", _OCI + "description"): _general(header, Keys.General.DESCRIPTION),
        ("gguf.model.licenses", _OCI + "licenses"): _general(header, Keys.General.LICENSE),
        ("gguf.model.vendor", _OCI + "vendor"): DEFAULT_VENDOR,
    }
    for (ours, oci), value in mirrored.items():
        chosen = user_labels.get(ours) or user_labels.get(oci) or value
        own[ours] = own[oci] = chosen
    labels = dict(user_labels)
    for key, value in own.items():
        if value and key not in labels:
            labels[key] = value
    return labels
