"""The final image: config (with gguf-packer's model fields and labels from the GGUF headers),
manifest, and their blobs in the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import GGUFPackError
from ..gguf_info import GGUFHeader, model_config_entry, model_labels, read_header_file, split_names
from ..image.snapshot import Snapshot, check_symlinks, clean_path
from ..oci import mediatypes as mt
from ..oci.descriptor import Descriptor
from ..oci.image import build_image_config, build_manifest, rfc3339
from ..packerfile.instructions import cmd_roles
from ..plan.graph import parse_platform
from ..store import Store
from .executor import StageResult

#: labels derived from a model file: inherited values are recomputed for the new model
_DERIVED_LABEL_PREFIXES = ("gguf.model.", "org.opencontainers.image.base.")
_DERIVED_OCI = tuple(f"org.opencontainers.image.{k}" for k in
                     ("title", "authors", "url", "description", "licenses", "vendor"))
_ROLE_FIELDS = {"model": "Model", "drafter": "Drafter", "projector": "Projector"}


@dataclass(frozen=True)
class AssembledImage:
    descriptor: Descriptor
    manifest: dict[str, Any]
    config: dict[str, Any]
    #: content digests of every file in the image (kept runnable by the ref)
    files: frozenset[str]


def _headers(store: Store, snapshot: Snapshot, value: str) -> tuple[list[GGUFHeader], int]:
    """The GGUF header(s) of a CMD path (all shards of a split set) and the bytes of its file(s)."""
    path = clean_path(value)
    node = snapshot.get(path)
    if node is None or node.kind != "file" or node.digest is None:
        raise GGUFPackError(f"CMD names {value}, but the image has no such file")
    paths = split_names(path) or [path]
    headers, size = [], 0
    for shard in paths:
        shard_node = snapshot.get(shard)
        if shard_node is None or shard_node.digest is None:
            raise GGUFPackError(f"CMD names {value}, but shard /{shard} of that split model is missing")
        try:
            headers.append(read_header_file(store.file_path(shard_node.digest)))
        except GGUFPackError as exc:
            raise GGUFPackError(f"CMD names {value}, which is not a readable GGUF file: {exc}") from None
        size += shard_node.size
    return headers, size


def _inherited_labels(state: StageResult) -> dict[str, str]:
    """Labels set by LABEL (and those of a base image that are not derived from its model)."""
    base = state.base_image.labels if state.base_image else {}
    own = {k: v for k, v in state.labels.items() if base.get(k) != v or k not in base}
    kept = {k: v for k, v in base.items()
            if not k.startswith(_DERIVED_LABEL_PREFIXES) and k not in _DERIVED_OCI}
    return {**kept, **own}


def assemble(
    store: Store, state: StageResult, *, platform: str, extra_labels: dict[str, str], source_date_epoch: int | None
) -> AssembledImage:
    """Write the config and manifest blobs of the image ``state`` describes."""
    cmd = state.cmd
    if not cmd:
        raise GGUFPackError('the image has no CMD: add CMD ["-m", "<model>.gguf", ...] to the final stage')
    check_symlinks(state.snapshot, "the image")  # what pull checks: a built image is one pull accepts
    roles = cmd_roles(cmd, lambda message: GGUFPackError(message))
    fields: dict[str, Any] = {"Cmd": cmd}
    model_headers: list[GGUFHeader] | None = None
    total_size = 0
    adapters = []
    for role in roles:
        headers, size = _headers(store, state.snapshot, role.value)
        total_size += size
        entry = model_config_entry(headers, cmd_value=role.value, cmd_index=role.index)
        if role.role == "adapter":
            adapters.append(entry)
        else:
            fields[_ROLE_FIELDS[role.role]] = entry
        if role.role == "model":
            model_headers = headers
    if model_headers is None:
        raise GGUFPackError('the CMD names no model: add "-m", "<model>.gguf"')
    if adapters:
        fields["Adapters"] = adapters
    fields["Size"] = total_size
    user_labels = {**_inherited_labels(state), **extra_labels}
    if state.base_image is not None:
        user_labels.setdefault("org.opencontainers.image.base.name", state.base_image.name)
        user_labels.setdefault("org.opencontainers.image.base.digest", state.base_image.digest)
    labels = model_labels(model_headers, user_labels=user_labels)
    fields["Labels"] = labels
    target = parse_platform(platform)
    config = build_image_config(
        architecture=target["architecture"], os=target["os"], diff_ids=[layer.diff_id for layer in state.layers],
        history=state.history, config=fields,
        created=rfc3339(source_date_epoch) if source_date_epoch is not None else None,
    )
    if "variant" in target:
        config["variant"] = target["variant"]
    config_digest, config_size, _ = store.put_json(config)
    manifest = build_manifest(
        Descriptor(mt.OCI_CONFIG, config_digest, config_size), [layer.descriptor for layer in state.layers], labels,
    )
    digest, size, _ = store.put_json(manifest)
    files = frozenset(node.digest for _, node in state.snapshot.items() if node.digest)
    return AssembledImage(Descriptor(mt.OCI_MANIFEST, digest, size), manifest, config, files)
