"""A stored image opened for running: its CMD and where each of its files lies in the store.

llama.cpp loads a GGUF from a plain file, and the store keeps every file of an image as one
(``files/sha256/<hex>``), so a server runs on the store's files in place: nothing is copied or
extracted. The one exception is a split model: llama.cpp finds shards 2..N by name beside shard 1,
so those get a directory of symbolic links named as in the image (:meth:`RunnableImage.host_path`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import GGUFPackError
from ..gguf_info import read_header_file, split_names
from ..image.load import load_image
from ..image.snapshot import clean_path
from ..store import Store
from ..store.layout import state_path
from ..store.leases import Lease
from ..util.fsutil import disk_full_as_error, ensure_store_dir

_TEMPLATE_KEY = "tokenizer.chat_template"


@dataclass(frozen=True)
class RunnableImage:
    """What a server needs from an image: its name, digest, CMD, and its files by image path."""

    store: Store
    name: str
    digest: str
    cmd: tuple[str, ...]
    #: cleaned image path (no leading ``/``) → content digest, for every regular file
    files: dict[str, str]

    @property
    def short_id(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]

    def digest_of(self, path: str) -> str:
        """The content digest of image file ``path`` (:func:`open_image` made sure the store has every
        file of the image); a clear error when the image lacks it."""
        digest = self.files.get(clean_path(path))
        if digest is None:
            raise GGUFPackError(f"{self.name}: CMD names {path}, but the image has no such file")
        return digest

    def read_bytes(self, path: str) -> bytes:
        return self.store.file_path(self.digest_of(path)).read_bytes()

    def host_path(self, path: str) -> Path:
        """The local file llama.cpp can load for image path ``path`` (a link farm for split models)."""
        digest = self.digest_of(path)
        names = split_names(clean_path(path))
        if names is None:
            return self.store.file_path(digest)
        return self._split_links(names)

    def split_model(self, path: str) -> bool:
        return split_names(clean_path(path)) is not None

    def _split_links(self, names: list[str]) -> Path:
        """Links named as the shards, in ``state/run/links/<image hex>/``: each directory on the way is a
        real one of the store (a planted symlink there is refused, never written through)."""
        base = state_path("run", "links", self.digest.removeprefix("sha256:"))
        first = None
        for shard in names:
            parent, _, name = shard.rpartition("/")
            link = ensure_store_dir(self.store.root, f"{base}/{parent}" if parent else base) / name
            target = self.store.file_path(self.digest_of("/" + shard))
            if not (link.is_symlink() and Path(os.readlink(link)) == target):
                temp = link.with_name(f".{name}.{os.getpid()}.tmp")
                try:
                    with disk_full_as_error(link):
                        temp.unlink(missing_ok=True)
                        temp.symlink_to(target)
                        temp.replace(link)
                except OSError as exc:
                    raise GGUFPackError(f"cannot link {link} to the model's shard: {exc.strerror}; remove "
                                        f"{link} and try again") from None
            first = first or link
        assert first is not None
        return first

    def model_template(self, model_path: str) -> str | None:
        """The chat template in the model's GGUF metadata (None when it has none)."""
        header = read_header_file(self.store.file_path(self.digest_of(model_path)))
        template = header.metadata.get(_TEMPLATE_KEY)
        return template if isinstance(template, str) else None


def open_image(store: Store, name: str, platform: str, fetch: Callable[[str], None] | None = None) -> RunnableImage:
    """The stored image ``name`` (a ref or an ID), pulled first with ``fetch`` when it is a registry
    ref the store lacks."""
    image = load_image(store, name, platform, fetch)
    cmd = image.cmd
    if not cmd:
        raise GGUFPackError(f"{name}: the image has no CMD, so there is no model to serve")
    files = {path: node.digest for path, node in image.snapshot.items() if node.kind == "file" and node.digest}
    return RunnableImage(store, name, image.digest, tuple(cmd), files)


def hold_image(
    store: Store, name: str, platform: str, fetch: Callable[[str], None] | None = None, lease_id: str | None = None,
) -> tuple[RunnableImage, Lease]:
    """:func:`open_image`, and a lease on the image taken before any ``prune`` could run: hand its
    ``fd`` to the server (``Launch.keep_fds``) and the image's blobs and files stay in the store for
    as long as the server runs, even when its refs are removed."""
    with store.lease():
        image = open_image(store, name, platform, fetch)
        return image, store.hold(store.resolve(image.digest), image.files.values(), lease_id)
