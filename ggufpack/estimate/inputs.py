"""Where the GGUF headers of an estimate come from: a GGUF file (or split set), a stored image, a registry.

An image config carries every model's header (``Model``, ``Drafter``, ``Projector``, ``Adapters[i]``),
so nothing here ever reads weights: a plain file is read up to the end of its tensor infos, an image
from its config blob, a registry image from its manifest and config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.gguf_info import GGUFHeader, header_from_config_entry, merge_headers, read_gguf
from ggufpack.oci.reader import ImageConfig, ModelEntry

if TYPE_CHECKING:
    from ggufpack.refs import Reference
    from ggufpack.registry.client import RegistryClient
    from ggufpack.store import Store


@dataclass(frozen=True)
class ModelInputs:
    """The headers an estimate needs and the CMD whose llama-server flags give the defaults."""

    source: str
    model: GGUFHeader
    drafter: GGUFHeader | None = None
    projector: GGUFHeader | None = None
    adapters: list[GGUFHeader] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def from_file(path: Path) -> ModelInputs:
    """A GGUF file, or any shard of a split set: headers only, no CMD."""
    return ModelInputs(source=str(path), model=merge_headers(read_gguf(path)))


def _header(entry: ModelEntry | None) -> GGUFHeader | None:
    return header_from_config_entry(entry.raw) if entry is not None else None


def from_config(config: Mapping[str, Any] | ImageConfig, source: str) -> ModelInputs:
    """An image config (ours or gguf-packer's), raw or already read by the typed reader: its ``config``
    holds ``Cmd`` and the model entries."""
    image = config if isinstance(config, ImageConfig) else ImageConfig.parse(config, source)
    model = _header(image.model)
    if model is None:
        raise GGUFPackError(f"{source}: the image config names no model (no 'Model' entry): nothing to estimate")
    return ModelInputs(
        source=source,
        model=model,
        drafter=_header(image.drafter),
        projector=_header(image.projector),
        adapters=[header_from_config_entry(a.raw) for a in image.adapters],
        cmd=list(image.cmd or ()),
    )


def load(target: str, store: Callable[[], Store], client: Callable[[str], RegistryClient],
         platform: str) -> ModelInputs:
    """``target`` as a GGUF file if one exists at that path, else as an image: the local store first,
    then the registry the reference names (manifest and config only)."""
    path = Path(target)
    if path.is_file() or target.endswith(".gguf"):
        if not path.is_file():
            raise GGUFPackError(f"{target}: no such GGUF file")
        return from_file(path)
    from ggufpack.image.stored import read_image

    try:
        local = store()
        return from_config(read_image(local, local.resolve(target), platform).config, target)
    except UsageError:
        ref = _registry_ref(target)
        if ref is None:
            raise
    from ggufpack.registry.pull import inspect_remote

    remote = inspect_remote(client(ref.registry or ""), ref, platform)
    if remote.format != "image":
        raise GGUFPackError(f"{target}: a {remote.format} artifact carries no GGUF headers in its config; "
                            "pull it first (ggufpack pull), then estimate the stored image")
    return from_config(remote.config, target)


def _registry_ref(text: str) -> Reference | None:
    from ggufpack.refs import parse_reference

    try:
        ref = parse_reference(text)
    except UsageError:
        return None
    return ref if ref.registry is not None else None
