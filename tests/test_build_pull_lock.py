"""A stage's base-image pull never stalls the other stages: their ops run and log meanwhile, and a
ref two stages name is pulled once.

The base image is built for real into one store and served by a loopback registry
(:class:`tests.helpers.hostileregistry.HostileRegistry`) whose layer download is slow: it is held
until the other stage has logged its ops (or 20 s pass, which fails the test), then for one more
second, during which that stage's ``COPY --from`` asks for the same image.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ggufpack.progress import Progress
from ggufpack.store import Store
from tests.helpers.builds import do_build, image_tree, open_store, tiny_gguf_bytes, write_context
from tests.helpers.hostileregistry import Answer, HostileRegistry, Seen

#: how long the layer download waits for the other stage's progress before giving up
_PATIENCE = 20.0
_LOCAL_DONE = "[local 2/3]"


class _Recorder(Progress):
    """Progress lines as they come, with the time each came; ``seen`` is set by the local stage's second op."""

    def __init__(self) -> None:
        super().__init__("quiet")
        self.lines: list[tuple[float, str]] = []
        self.seen = threading.Event()

    def log(self, message: str) -> None:
        self.lines.append((time.monotonic(), message))
        if _LOCAL_DONE in message:
            self.seen.set()


def _serve(reg: HostileRegistry, store: Store, ref: str, repository: str, tag: str) -> list[str]:
    """Serve ``ref`` of ``store`` as ``repository:tag``; returns its layer digests."""
    record = store.resolve(ref)
    manifest = store.read_json(record.descriptor.digest)
    reg.manifest(repository, tag, store.read_blob(record.descriptor.digest), record.descriptor.media_type)
    for descriptor in (manifest["config"], *manifest["layers"]):
        reg.blob(repository, store.read_blob(descriptor["digest"]))
    return [layer["digest"] for layer in manifest["layers"]]


def test_a_slow_base_pull_lets_other_stages_progress_and_is_fetched_once(tmp_path: Path) -> None:
    base_store = open_store(tmp_path / "base-store")
    packerfile = 'FROM scratch\nCOPY m.gguf /m.gguf\nCAT <<EOF /base.txt\nfrom the base\nEOF\nCMD ["-m", "/m.gguf"]\n'
    base_ctx = write_context(tmp_path / "base-ctx", packerfile, {"m.gguf": tiny_gguf_bytes(tmp_path / "gguf")})
    do_build(base_store, base_ctx, tags=("base:1",))

    progress = _Recorder()
    held: dict[str, float | bool] = {}

    with HostileRegistry() as reg:
        layers = _serve(reg, base_store, "base:1", "team/base", "1")

        def slow_layer(seen: Seen) -> Answer | None:
            if seen.method == "GET" and any(seen.path.endswith(f"/blobs/{d}") for d in layers):
                held["progressed"] = progress.seen.wait(_PATIENCE)
                held["released"] = time.monotonic()
                time.sleep(1.0)  # still slow: the local stage's COPY --from asks for the image meanwhile
            return None

        reg.gate = slow_layer
        base = f"{reg.host}/team/base:1"
        packerfile = (
            f"FROM {base} AS pulled\nCAT <<EOF /pulled.txt\npulled\nEOF\n\n"
            "FROM scratch AS local\nCAT <<EOF /a.txt\na\nEOF\nCAT <<EOF /b.txt\nb\nEOF\n"
            f"COPY --from={base} /base.txt /copied.txt\n\n"
            "FROM pulled\nCOPY --from=local / /local/\n"
        )
        store = open_store(tmp_path / "store")
        result = do_build(store, write_context(tmp_path / "ctx", packerfile), tags=("derived:1",),
                          progress=progress, plain_http=True)
        requests = reg.requests

    assert held["progressed"] is True, "the local stage logged nothing while the base image downloaded"
    local_lines = [t for t, line in progress.lines if "[local " in line]
    assert local_lines and min(local_lines) < float(held["released"])
    manifest_gets = [r for r in requests if r.method == "GET" and "/manifests/" in r.path]
    layer_gets = [r for r in requests if r.method == "GET" and any(r.path.endswith(d) for d in layers)]
    assert len(manifest_gets) == 1 and len(layer_gets) == len(layers), [r.path for r in requests]
    tree = image_tree(store, result.image.manifest)
    assert tree["base.txt"][2] == b"from the base\n" and tree["pulled.txt"][2] == b"pulled\n"
    assert tree["local/copied.txt"][2] == b"from the base\n" and tree["local/a.txt"][2] == b"a\n"
