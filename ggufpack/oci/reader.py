"""The typed reader of image JSON: configs, manifests and indexes, from a registry or a store.

Everything ggufpack reads from an image's JSON goes through here first: a registry (or anyone
between it and us, on plain HTTP), a shared store or an untrusted archive can hand us any JSON at
all, so every field we use is checked for its type and bounds, and a bad one is a
:class:`MalformedImageError` naming it and its value, never a traceback later on. Fields we do not
use are kept as they are (``raw``) but never interpreted. These are the only rules: the registry
code (``pull``, ``push``, remote ``inspect``) reads what it is served with them too, and adds only
what belongs to the distribution protocol (see :mod:`ggufpack.registry.client`).

The rules, per field (absent and ``null`` mean "not set" everywhere):

- config: ``os``, ``architecture``, ``variant``, ``created`` strings; ``rootfs.diff_ids`` a list of
  ``sha256:`` digests; ``history`` a list of objects (``created_by``, ``created``, ``comment``,
  ``author`` strings, ``empty_layer`` a boolean) whose non-empty entries, when there is a history
  at all, are exactly one per diff_id (history is optional in OCI: an image without one gets an
  empty entry per layer, as BuildKit does); ``config.Cmd`` a list of strings (a string is refused,
  never split into characters); ``config.Labels`` strings to strings; ``config.Size`` an integer
  in [0, 2^64); ``config.Model``/``Drafter``/``Projector`` objects and ``config.Adapters`` a list
  of objects, each with ``CmdParameterValue``/``Architecture`` strings, ``CmdParameterIndex`` an
  int in [0, 2^31), ``Parameters`` an int in [0, 2^64), ``BitsPerWeight`` a finite number >= 0,
  ``FileType`` an int in [0, 2^32), ``GGUF`` an object (read by :mod:`ggufpack.gguf_info`).
- descriptors: ``mediaType`` an RFC 6838 media type name, ``digest`` ``sha256:<64 hex>``, ``size``
  an int in [0, :data:`MAX_BLOB_BYTES`] (``1e400``, ``1.5``, ``true`` and ``"12"`` are refused,
  never coerced), ``annotations`` strings to strings, ``platform`` an object of which only ``os``,
  ``architecture`` and ``variant`` are kept, each a string, ``artifactType`` a media type name.
- manifests and indexes: ``mediaType`` and ``artifactType`` media type names; a manifest's
  ``config`` a descriptor, ``layers`` a list of them; an index's ``manifests`` a list of them.
- the whole document: valid UTF-8 JSON, nested at most :data:`MAX_JSON_DEPTH` deep (see
  :func:`decode_json`); a config at most :data:`MAX_CONFIG_BYTES`, a manifest or index at most
  :data:`MAX_MANIFEST_BYTES`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from ggufpack.errors import GGUFPackError, shown
from ggufpack.oci.descriptor import Descriptor

#: the largest image config read, at pull, at remote inspect and from the store: a model image's
#: config holds the GGUF header summary, a few hundred KiB; a bigger one would cost its size in memory
#: at every ``list``
MAX_CONFIG_BYTES = 64 << 20
#: the largest manifest or index read, from a registry or the store (distribution refuses bigger ones too)
MAX_MANIFEST_BYTES = 4 << 20
#: the largest blob size a descriptor may state (1 PiB): far above any model, far below float trouble
MAX_BLOB_BYTES = 1 << 50
#: deeper JSON than this is refused before anything recurses over it (ours nest about 25 deep)
MAX_JSON_DEPTH = 64
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# RFC 6838 section 4.2: type "/" subtype, each a restricted name of at most 127 characters
_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(f"{_NAME}/{_NAME}")
#: the platform fields platform matching reads (``os.features`` and the like are dropped)
_PLATFORM_FIELDS = ("os", "architecture", "variant")
_UINT64 = 1 << 64


class MalformedImageError(GGUFPackError):
    """An image's config, manifest or index holds something ggufpack cannot trust."""


def _too_deep(what: str) -> str:
    return f"{what} is not usable JSON: it is nested too deeply (more than {MAX_JSON_DEPTH} levels)"


def _check_depth(obj: Any, what: str, error: type[GGUFPackError] = MalformedImageError) -> None:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise error(_too_deep(what))
        stack.extend((child, depth + 1) for child in children)


def decode_json(data: bytes | str, what: str, error: type[GGUFPackError] = MalformedImageError) -> Any:
    """Parse untrusted JSON (an image's documents, and whatever else a registry or a credentials file
    hands us): bad UTF-8, a 5000-digit number, nesting deeper than :data:`MAX_JSON_DEPTH` or anything
    else that is not usable JSON is an ``error`` naming ``what``, never Python's own exception."""
    try:
        obj = json.loads(data)
    except RecursionError:
        raise error(_too_deep(what)) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and over-long integers
        raise error(f"{what} is not valid JSON ({str(exc)[:200]})") from None
    _check_depth(obj, what, error)
    return obj


# -- field readers ------------------------------------------------------------------------------


def _bad(where: str, value: Any, expected: str) -> MalformedImageError:
    return MalformedImageError(f"{where} is {shown(value)}, not {expected}")


def _object(value: Any, where: str) -> dict[str, Any]:
    """``value`` as an object; ``null`` or absent is an empty one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(where, value, "an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(where, value, "a list")
    return value


def _string(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(f"{where}.{key}", value, "a string")
    return value


def _integer(obj: Mapping[str, Any], key: str, where: str, upper: int) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < upper:
        raise _bad(f"{where}.{key}", value, f"an integer from 0 to {upper - 1}")
    return value


def _number(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise _bad(f"{where}.{key}", value, "a finite number >= 0")
    return float(value)


def _string_map(value: Any, where: str) -> dict[str, str]:
    out = _object(value, where)
    for key, item in out.items():
        if not isinstance(item, str):
            raise _bad(f"{where}[{shown(key)}]", item, "a string")
    return dict(out)


def _string_list(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise MalformedImageError(f"{where} is the string {shown(value)}, not a list of strings (JSON form)")
    items = _list(value, where)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _bad(f"{where}[{i}]", item, "a string")
    return tuple(items)


def is_media_type(value: object) -> TypeGuard[str]:
    """Whether ``value`` is an RFC 6838 media type name (``type/subtype``, no parameters)."""
    return isinstance(value, str) and _MEDIA_TYPE.fullmatch(value) is not None


def _media_type(value: Any, where: str) -> str | None:
    """``value``, an RFC 6838 media type name, or None when it is absent or null."""
    if value is not None and not is_media_type(value):
        raise _bad(where, value, "a media type (RFC 6838 type/subtype)")
    return value


def parse_digest(value: Any, where: str) -> str:
    """A ``sha256:<64 hex>`` digest (the only kind the store holds and that we can verify)."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise MalformedImageError(f"{where}: unsupported or malformed digest {shown(value)}, "
                                  "not sha256:<64 hex digits>")
    return value


# -- descriptors, manifests, indexes ------------------------------------------------------------


def parse_descriptor(value: Any, where: str) -> Descriptor:
    """A content descriptor (a registry's, a store's or an archive's) with every field checked."""
    if not isinstance(value, dict):
        raise _bad(where, value, "a descriptor object")
    try:
        return _descriptor(value)
    except MalformedImageError as exc:
        raise MalformedImageError(f"{where} is a malformed descriptor: {exc}") from None


def _descriptor(obj: dict[str, Any]) -> Descriptor:
    """:func:`parse_descriptor` once ``obj`` is an object; messages name the field alone."""
    media_type = obj.get("mediaType")
    if not is_media_type(media_type):
        raise _bad("mediaType", media_type, "a media type (RFC 6838 type/subtype)")
    size = obj.get("size")
    if type(size) is not int or not 0 <= size <= MAX_BLOB_BYTES:  # not a bool, nor a float
        raise _bad("size", size, f"a whole number of bytes from 0 to {MAX_BLOB_BYTES}")
    platform = obj.get("platform")
    if platform is not None:
        platform = {key: item for key, item in _object(platform, "platform").items() if key in _PLATFORM_FIELDS}
        for key, item in platform.items():
            if not isinstance(item, str):
                raise _bad(f"platform.{key}", item, "a string")
    return Descriptor(
        media_type=media_type, digest=parse_digest(obj.get("digest"), "digest"), size=size,
        annotations=_string_map(obj.get("annotations"), "annotations"), platform=platform or None,
        artifact_type=_media_type(obj.get("artifactType"), "artifactType"),
    )


def is_index(obj: Any) -> bool:
    """Whether a parsed manifest document is an image index (it lists manifests)."""
    return isinstance(obj, dict) and "manifests" in obj


@dataclass(frozen=True)
class ImageManifest:
    """An image manifest: its config and layer descriptors, checked."""

    raw: dict[str, Any]
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str]
    artifact_type: str | None = None

    @property
    def blobs(self) -> list[Descriptor]:
        """The config first, then the layers."""
        return [self.config, *self.layers]

    @classmethod
    def parse(cls, obj: Any, source: str) -> ImageManifest:
        where = f"{source}: manifest"
        if not isinstance(obj, dict):
            raise _bad(where, obj, "a JSON object")
        doc = obj
        _check_depth(doc, where)
        if is_index(doc):
            raise MalformedImageError(f"{where} is an image index, not an image manifest")
        return cls(
            raw=doc, media_type=_media_type(doc.get("mediaType"), f"{where}.mediaType") or "",
            config=parse_descriptor(doc.get("config"), f"{where}.config"),
            layers=tuple(parse_descriptor(d, f"{where}.layers[{i}]")
                         for i, d in enumerate(_list(doc.get("layers"), f"{where}.layers"))),
            annotations=_string_map(doc.get("annotations"), f"{where}.annotations"),
            artifact_type=_media_type(doc.get("artifactType"), f"{where}.artifactType"),
        )


def parse_index(obj: Any, source: str) -> list[Descriptor]:
    """The manifest descriptors of an image index, checked (platforms included): ``manifests`` must be
    a list, each entry a descriptor."""
    where = f"{source}: index"
    doc = _object(obj, where)
    _media_type(doc.get("mediaType"), f"{where}.mediaType")
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise _bad(f"{where}.manifests", manifests, "a list")
    return [parse_descriptor(d, f"{where}.manifests[{i}]") for i, d in enumerate(manifests)]


# -- the image config ---------------------------------------------------------------------------


_HISTORY_STRINGS = ("created_by", "created", "comment", "author")


@dataclass(frozen=True)
class ModelEntry:
    """One of gguf-packer's model objects (``Model``, ``Drafter``, ``Projector``, ``Adapters[i]``)."""

    raw: dict[str, Any]
    cmd_value: str
    cmd_index: int | None
    architecture: str
    parameters: int | None
    bits_per_weight: float | None
    file_type: int | None

    @classmethod
    def parse(cls, value: Any, where: str) -> ModelEntry:
        if not isinstance(value, dict):
            raise _bad(where, value, "an object")
        obj = value
        if "GGUF" in obj:
            _object(obj["GGUF"], f"{where}.GGUF")
        return cls(
            raw=obj, cmd_value=_string(obj, "CmdParameterValue", where),
            cmd_index=_integer(obj, "CmdParameterIndex", where, 1 << 31),
            architecture=_string(obj, "Architecture", where),
            parameters=_integer(obj, "Parameters", where, _UINT64),
            bits_per_weight=_number(obj, "BitsPerWeight", where),
            file_type=_integer(obj, "FileType", where, 1 << 32),
        )

    def summary(self) -> dict[str, Any]:
        """What ``inspect`` shows of it (gguf-packer's field names)."""
        return {"CmdParameterValue": self.cmd_value, "CmdParameterIndex": self.cmd_index,
                "Architecture": self.architecture, "Parameters": self.parameters,
                "BitsPerWeight": self.bits_per_weight, "FileType": self.file_type}


def _model(fields: Mapping[str, Any], key: str, where: str) -> ModelEntry | None:
    value = fields.get(key)
    return None if value is None else ModelEntry.parse(value, f"{where}.{key}")


def _history(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    entries = _list(value, where)
    for i, entry in enumerate(entries):
        item = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise _bad(item, entry, "an object")
        for key in _HISTORY_STRINGS:
            _string(entry, key, item)
        empty = entry.get("empty_layer")
        if empty is not None and not isinstance(empty, bool):
            raise _bad(f"{item}.empty_layer", empty, "true or false")
    return tuple(entries)


@dataclass(frozen=True)
class ImageConfig:
    """An image config (``application/vnd.oci.image.config.v1+json`` and Docker's), typed.

    ``history`` is what the config holds (possibly nothing); :attr:`layer_history` and
    :attr:`full_history` always pair one non-empty entry with each diff_id.
    """

    raw: dict[str, Any]
    os: str = ""
    architecture: str = ""
    variant: str = ""
    created: str = ""
    diff_ids: tuple[str, ...] = ()
    history: tuple[dict[str, Any], ...] = ()
    cmd: tuple[str, ...] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    size: int = 0
    model: ModelEntry | None = None
    drafter: ModelEntry | None = None
    projector: ModelEntry | None = None
    adapters: tuple[ModelEntry, ...] = ()

    @classmethod
    def parse(cls, obj: Any, source: str) -> ImageConfig:
        """Check every field ggufpack uses; ``source`` names the image in messages."""
        where = f"{source}: image config"
        if not isinstance(obj, dict):
            raise _bad(where, obj, "a JSON object")
        _check_depth(obj, where)
        fields = _object(obj.get("config"), f"{where}.config")
        inner = f"{where}.config"
        rootfs = _object(obj.get("rootfs"), f"{where}.rootfs")
        diff_ids = tuple(parse_digest(d, f"{where}.rootfs.diff_ids[{i}]")
                         for i, d in enumerate(_list(rootfs.get("diff_ids"), f"{where}.rootfs.diff_ids")))
        history = _history(obj.get("history"), f"{where}.history")
        layered = sum(1 for h in history if not h.get("empty_layer"))
        if history and layered != len(diff_ids):
            raise MalformedImageError(
                f"{where}: history has {layered} layer entries for {len(diff_ids)} layers (rootfs.diff_ids); "
                "the config is corrupt"
            )
        size = _integer(fields, "Size", inner, _UINT64)
        return cls(
            raw=obj, os=_string(obj, "os", where), architecture=_string(obj, "architecture", where),
            variant=_string(obj, "variant", where), created=_string(obj, "created", where), diff_ids=diff_ids,
            history=history, cmd=_string_list(fields.get("Cmd"), f"{inner}.Cmd"),
            labels=_string_map(fields.get("Labels"), f"{inner}.Labels"), size=size or 0,
            model=_model(fields, "Model", inner), drafter=_model(fields, "Drafter", inner),
            projector=_model(fields, "Projector", inner),
            adapters=tuple(ModelEntry.parse(a, f"{inner}.Adapters[{i}]")
                           for i, a in enumerate(_list(fields.get("Adapters"), f"{inner}.Adapters"))),
        )

    @property
    def full_history(self) -> list[dict[str, Any]]:
        """The history a derived image carries on: the config's own, or, when it has none, one empty
        entry per layer (history is optional in OCI)."""
        if self.history:
            return [dict(h) for h in self.history]
        return [{} for _ in self.diff_ids]

    @property
    def layer_history(self) -> list[dict[str, Any]]:
        """One history entry per layer, in order (empty entries dropped)."""
        return [h for h in self.full_history if not h.get("empty_layer")]


def layer_diff_ids(config: Any, where: str, layers: int) -> list[str]:
    """The ``rootfs.diff_ids`` of an image config (already checked by :meth:`ImageConfig.parse`), one per
    layer of its manifest (``layers`` of them); a :class:`MalformedImageError` otherwise."""
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise MalformedImageError(f"{where}: the image config has no rootfs.diff_ids list of digests")
    if len(diff_ids) != layers:
        raise MalformedImageError(f"{where}: the config lists {len(diff_ids)} layers, the manifest {layers}")
    return diff_ids
