"""Committing an image: its layers plus the config inputs (history, labels, CMD, platform, base image,
``SOURCE_DATE_EPOCH``) become the config (with gguf-packer's model fields and labels taken from the
GGUF headers) and the manifest, as blobs of the store.

The build engine commits the final stage of a Packerfile through here; the importers of foreign
artifacts (:mod:`ggufpack.formats`) commit the files they found, with no Packerfile in between.
Setting a ref is the caller's step, under the same :meth:`~ggufpack.store.Store.lease`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import GGUFPackError
from ..gguf_info import GGUFHeader, model_config_entry, model_labels, read_header_file, split_names
from ..oci import mediatypes as mt
from ..oci.descriptor import Descriptor, canonical_json
from ..oci.image import build_image_config, build_manifest, history_entry, rfc3339
from ..oci.platform import parse_platform
from ..oci.reader import MAX_CONFIG_BYTES
from ..oci.tarlayer import LayerEntry, choose_compression, write_layer
from ..options.default_runtime import SYSTEM_PROMPT_OPTIONS
from ..progress import Progress
from ..store import Store
from .layers import LayerResult
from .load import BaseImage
from .snapshot import Diff, Snapshot, check_symlinks, clean_path

#: labels derived from a model file: inherited values are recomputed for the new model
_DERIVED_LABEL_PREFIXES = ("gguf.model.", "org.opencontainers.image.base.")
_DERIVED_OCI = tuple(f"org.opencontainers.image.{k}" for k in
                     ("title", "authors", "url", "description", "licenses", "vendor"))
_ROLE_FIELDS = {"model": "Model", "drafter": "Drafter", "projector": "Projector"}


class CmdFile(Protocol):
    """A model file a CMD names (``-m``, ``--mmproj``, ``--lora``...): its role, path and index in CMD."""

    @property
    def role(self) -> str: ...

    @property
    def value(self) -> str: ...

    @property
    def index(self) -> int: ...


class CmdError(GGUFPackError):
    """A CMD argument the committed image cannot serve; ``index`` is that argument's index in CMD (the
    build engine points at it in the Packerfile). A build failure (exit 1), as a missing COPY source is."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


#: CMD options that give the chat template (llama-server's spellings)
_TEMPLATE_OPTIONS = frozenset({"--chat-template", "--chat-template-file"})
#: GGUF key of the model's own chat template
_TEMPLATE_KEY = "tokenizer.chat_template"
#: how many of the image's GGUF files a "no such file" message lists
_LISTED_GGUFS = 10


@dataclass(frozen=True)
class AssembledImage:
    """A committed image: its manifest descriptor, manifest and config bodies."""

    descriptor: Descriptor
    manifest: dict[str, Any]
    config: dict[str, Any]
    #: content digests of every file in the image (kept runnable by the ref)
    files: frozenset[str]
    #: the header of the model CMD names (``-m``; the first shard of a split one)
    model: GGUFHeader


def history_item(created_by: str, *, empty_layer: bool = False, source_date_epoch: int | None = None,
            comment: str | None = None) -> dict[str, Any]:
    """One ``history`` item, dated ``SOURCE_DATE_EPOCH`` when set (undated otherwise: reproducible)."""
    created = rfc3339(source_date_epoch) if source_date_epoch is not None else None
    return history_entry(created_by, empty_layer=empty_layer, created=created, comment=comment)


def commit_layer(store: Store, diff: Diff, *, mtime: int, progress: Progress) -> LayerResult:
    """The layer blob holding ``diff`` (nodes whose content is in the store's files), written to the store."""
    entries = [
        LayerEntry(
            path=path, kind=node.kind, mode=node.mode, uid=node.uid, gid=node.gid,
            source=store.file_path(node.digest) if node.digest else None, linkname=node.linkname,
            size=node.size if node.kind == "file" else -1,
        )
        for path, node in sorted(diff.items())
    ]
    compress = choose_compression(entries)
    with store.blob_writer() as writer:
        info = write_layer(entries, writer, compress=compress, mtime=mtime, progress=progress)
        writer.commit(info.digest, info.size)
    return LayerResult(info.descriptor(), info.diff_id, diff)


def _no_such_file(snapshot: Snapshot, role: CmdFile) -> CmdError:
    ggufs = sorted(f"/{path}" for path, node in snapshot.items() if node.kind == "file" and path.endswith(".gguf"))
    listed = ", ".join(ggufs[:_LISTED_GGUFS]) + (f" and {len(ggufs) - _LISTED_GGUFS} more"
                                                 if len(ggufs) > _LISTED_GGUFS else "")
    found = f"its GGUF files are {listed}" if ggufs else "it holds no GGUF file"
    return CmdError(f"CMD names {role.value}, but the image has no such file; {found}", role.index)


def _headers(store: Store, snapshot: Snapshot, role: CmdFile) -> tuple[list[GGUFHeader], int]:
    """The GGUF header(s) of a CMD path (all shards of a split set) and the bytes of its file(s)."""
    value = role.value
    path = clean_path(value)
    node = snapshot.get(path)
    if node is None or node.kind != "file" or node.digest is None:
        raise _no_such_file(snapshot, role)
    paths = split_names(path) or [path]
    headers, size = [], 0
    for shard in paths:
        shard_node = snapshot.get(shard)
        if shard_node is None or shard_node.digest is None:
            raise CmdError(f"CMD names {value}, but shard /{shard} of that split model is missing", role.index)
        try:
            headers.append(read_header_file(store.file_path(shard_node.digest)))
        except GGUFPackError as exc:
            raise CmdError(f"CMD names {value}, which is not a readable GGUF file: {exc}", role.index) from None
        size += shard_node.size
    return headers, size


def check_system_prompt(cmd: Sequence[str], model: GGUFHeader) -> None:
    """A system prompt needs a chat template to travel in (``run`` folds it into one): CMD's own or the
    model's. The build engine refuses an image without one rather than leave it to fail at ``run``."""
    prompt = next((i for i, arg in enumerate(cmd) if arg in SYSTEM_PROMPT_OPTIONS), None)
    if prompt is None or _TEMPLATE_OPTIONS & set(cmd) or isinstance(model.metadata.get(_TEMPLATE_KEY), str):
        return
    raise CmdError(f"CMD has a system prompt ({cmd[prompt]}) but the model has no chat template to put it in "
                   f"(no {_TEMPLATE_KEY}); add --chat-template-file to CMD, or leave the system prompt out",
                   prompt)


def inherited_labels(labels: Mapping[str, str], base: BaseImage | None) -> dict[str, str]:
    """Labels set by LABEL (and those of a base image that are not derived from its model)."""
    base_labels = base.labels if base else {}
    own = {k: v for k, v in labels.items() if base_labels.get(k) != v or k not in base_labels}
    kept = {k: v for k, v in base_labels.items()
            if not k.startswith(_DERIVED_LABEL_PREFIXES) and k not in _DERIVED_OCI}
    return {**kept, **own}


def model_fields(roles: Sequence[CmdFile], headers_of: Callable[[CmdFile], tuple[list[GGUFHeader], int]],
                 ) -> tuple[dict[str, Any], list[GGUFHeader]]:
    """gguf-packer's model fields of an image config (``Model``, ``Drafter``, ``Projector``, ``Adapters``,
    ``Size``) for the files CMD names, and the model's headers. ``headers_of`` reads one file's GGUF
    header(s) and size: from the store here, through ranged reads of BuildKit's result in the frontend."""
    fields: dict[str, Any] = {}
    model_headers: list[GGUFHeader] | None = None
    total_size = 0
    adapters = []
    for role in roles:
        headers, size = headers_of(role)
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
    return fields, model_headers


def commit_image(
    store: Store,
    *,
    snapshot: Snapshot,
    layers: Sequence[LayerResult],
    history: Sequence[dict[str, Any]],
    cmd: Sequence[str] | None,
    roles: Sequence[CmdFile],
    labels: Mapping[str, str],
    extra_labels: Mapping[str, str],
    base: BaseImage | None,
    platform: str,
    source_date_epoch: int | None,
) -> AssembledImage:
    """Write the config and manifest blobs of an image whose filesystem ``layers`` make (``snapshot``).

    ``roles`` are the model files ``cmd`` names; ``labels`` those the image carries (a base image's
    included: derived ones are recomputed from the new model), ``extra_labels`` override them.
    """
    if not cmd:
        raise GGUFPackError('the image has no CMD: add CMD ["-m", "<model>.gguf", ...] to the final stage')
    check_symlinks(snapshot, "the image")  # what pull checks: a committed image is one pull accepts
    models, model_headers = model_fields(roles, lambda role: _headers(store, snapshot, role))
    fields: dict[str, Any] = {"Cmd": list(cmd), **models}
    user_labels = {**inherited_labels(labels, base), **extra_labels}
    if base is not None:
        user_labels.setdefault("org.opencontainers.image.base.name", base.name)
        user_labels.setdefault("org.opencontainers.image.base.digest", base.digest)
    image_labels = model_labels(model_headers, user_labels=user_labels)
    fields["Labels"] = image_labels
    target = parse_platform(platform)
    config = build_image_config(
        architecture=target["architecture"], os=target["os"], diff_ids=[layer.diff_id for layer in layers],
        history=list(history), config=fields,
        created=rfc3339(source_date_epoch) if source_date_epoch is not None else None,
    )
    if "variant" in target:
        config["variant"] = target["variant"]
    config_bytes = canonical_json(config)
    if len(config_bytes) > MAX_CONFIG_BYTES:  # what pull (ours, and registries') would refuse
        entries = [*(models.get(f) for f in _ROLE_FIELDS.values()), *models.get("Adapters", ())]
        tensors = sum(len(entry["GGUF"]["tensorInfos"]) for entry in entries if entry)
        raise GGUFPackError(
            f"the image config would be {len(config_bytes) >> 20} MiB, over the {MAX_CONFIG_BYTES >> 20} MiB "
            f"that a pull accepts: the model files describe {tensors} tensors and {len(image_labels)} labels")
    config_digest, config_size = store.put_bytes(config_bytes)
    manifest = build_manifest(
        Descriptor(mt.OCI_CONFIG, config_digest, config_size), [layer.descriptor for layer in layers], image_labels,
    )
    digest, size, _ = store.put_json(manifest)
    files = frozenset(node.digest for _, node in snapshot.items() if node.digest)
    return AssembledImage(Descriptor(mt.OCI_MANIFEST, digest, size), manifest, config, files, model_headers[0])
