"""The local store: OCI layout validity, atomic commits, concurrency, refs, prune, disk usage."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.oci.descriptor import Descriptor, canonical_json, sha256_digest
from ggufpack.store import Store, default_root

REPO = Path(__file__).resolve().parent.parent
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
CREATED = "2024-05-01T12:00:00Z"


def tar_bytes(name: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(content), 0, 0o644
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def make_image(store: Store, content: bytes = b"hello\n") -> Descriptor:
    """A minimal real image: one tar layer, a config, a manifest."""
    layer, layer_size = store.put_bytes(tar_bytes("hello.txt", content))
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]}}
    config_digest, config_size, _ = store.put_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": LAYER, "digest": layer, "size": layer_size}],
    }
    digest, size, _ = store.put_json(manifest)
    return Descriptor(MANIFEST, digest, size)


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def ingest_entries(store: Store) -> list[str]:
    return sorted(p.name for p in store.layout.ingest.iterdir())


# -- layout ------------------------------------------------------------------------------------


def test_layout_created(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    root = store.root
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    assert index == {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}
    for sub in ("blobs/sha256", "files/sha256", "ingest", "cache"):
        assert (root / sub).is_dir()
    assert store.cache_dir == root / "cache"
    Store(root)  # reopening is harmless


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GGUFPACK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "home"
    assert Store.open_default().root == tmp_path / "home"
    monkeypatch.delenv("GGUFPACK_HOME")
    assert default_root() == tmp_path / "xdg" / "ggufpack"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "u"))
    assert default_root() == tmp_path / "u" / ".local" / "share" / "ggufpack"


def test_wrong_layout_version_refused(tmp_path: Path) -> None:
    Store(tmp_path)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"9.9.9"}')
    with pytest.raises(GGUFPackError, match=r"9\.9\.9"):
        Store(tmp_path)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed (apt-get install skopeo)")
def test_skopeo_reads_the_layout(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    descriptor = make_image(store)
    store.set_ref("model:v1", descriptor, CREATED)
    store.set_ref("localhost:5000/org/model:q4", descriptor, CREATED)
    for ref in ("model:v1", "localhost:5000/org/model:q4"):
        out = subprocess.run(
            ["skopeo", "inspect", f"oci:{store.root}:{ref}"], check=True, capture_output=True, text=True
        )
        facts = json.loads(out.stdout)
        assert facts["Digest"] == descriptor.digest
        assert facts["Architecture"] == "amd64"
    # A full copy re-verifies every blob digest and size.
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"oci:{store.root}:model:v1", f"dir:{tmp_path / 'out'}"],
        check=True, capture_output=True,
    )
    assert (tmp_path / "out" / "manifest.json").read_bytes() == store.read_blob(descriptor.digest)


# -- blobs -------------------------------------------------------------------------------------


def test_put_and_read(tmp_path: Path) -> None:
    store = Store(tmp_path)
    digest, size = store.put_bytes(b"abc")
    assert (digest, size) == (sha256_digest(b"abc"), 3)
    assert store.has_blob(digest) and store.read_blob(digest) == b"abc"
    assert store.blob_path(digest) == tmp_path / "blobs" / "sha256" / digest.split(":")[1]
    assert store.put_bytes(b"abc") == (digest, 3)  # idempotent
    jd, js, data = store.put_json({"b": 1, "a": [1, 2]})
    assert data == canonical_json({"a": [1, 2], "b": 1}) and js == len(data)
    assert store.read_json(jd) == {"a": [1, 2], "b": 1}
    assert ingest_entries(store) == []
    with pytest.raises(GGUFPackError, match="missing"):
        store.read_blob(sha256_digest(b"nope"))
    with pytest.raises(GGUFPackError, match="malformed"):
        store.blob_path("sha256:../../etc/passwd")


def test_tarfile_streams_into_a_blob_writer(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.blob_writer() as writer, tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("x.txt")
        info.size, info.mtime = 5, 0
        tar.addfile(info, io.BytesIO(b"12345"))
    # The tar stream is finished only once the TarFile closes: commit after it.
    with pytest.raises(ValueError, match="already"):
        writer.commit()
    assert ingest_entries(store) == []
    with store.blob_writer() as writer:
        with tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("x.txt")
            info.size, info.mtime = 5, 0
            tar.addfile(info, io.BytesIO(b"12345"))
        digest, size = writer.commit()
    assert store.read_blob(digest) == tar_bytes("x.txt", b"12345") and size % 512 == 0


def test_large_write_and_file_range(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    big = os.urandom(3 << 20)
    source = tmp_path / "src.bin"
    source.write_bytes(big)
    with store.blob_writer() as writer:
        writer.write(memoryview(big))  # large: written through without buffering
        writer.write(b"head")
        for start in range(0, len(big), 700_000):
            writer.write(big[start : start + 700_000])
        writer.write_from_file(source, 4096, 10_000)
        assert writer.tell() == 2 * len(big) + 4 + 10_000
        digest, _ = writer.commit(sha256_digest(big + b"head" + big + big[4096:14096]))
    assert store.read_blob(digest) == big + b"head" + big + big[4096:14096]
    with store.blob_writer() as writer, pytest.raises(GGUFPackError, match="cannot read"):
        writer.write_from_file(source, len(big), 1)


def test_digest_mismatch_rejected(tmp_path: Path) -> None:
    store = Store(tmp_path)
    wrong = sha256_digest(b"something else")
    with pytest.raises(GGUFPackError, match="digest mismatch") as info:
        store.put_bytes(b"data", expected_digest=wrong)
    assert wrong in str(info.value) and sha256_digest(b"data") in str(info.value)
    assert not store.has_blob(sha256_digest(b"data")) and not store.has_blob(wrong)
    assert ingest_entries(store) == []


def test_size_mismatch_rejected(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(GGUFPackError, match="size mismatch: expected 5 bytes, got 4"), store.blob_writer() as writer:
        writer.write(b"data")
        writer.commit(sha256_digest(b"data"), 5)
    assert not store.has_blob(sha256_digest(b"data"))
    assert ingest_entries(store) == []


@pytest.mark.parametrize(("content", "size"), [(b"data", 5), (b"datum", 5)])
def test_adopted_blobs_are_verified(tmp_path: Path, content: bytes, size: int) -> None:
    """A finished download enters the blobs only as the size and digest its descriptor says; else it is dropped."""
    store = Store(tmp_path)
    partial = tmp_path / "state" / "downloads" / "x.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(content)
    expected = sha256_digest(b"data!")
    with pytest.raises(GGUFPackError, match="mismatch"):
        store.adopt_blob(partial, expected, size)
    assert not partial.exists() and not store.has_blob(expected)
    partial.write_bytes(b"data!")
    store.adopt_blob(partial, expected, 5)
    assert store.read_blob(expected) == b"data!" and not partial.exists()


def test_exception_inside_writer_drops_temp(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(RuntimeError), store.blob_writer() as writer:
        writer.write(b"partial")
        assert len(ingest_entries(store)) == 1
        raise RuntimeError("boom")
    assert ingest_entries(store) == []
    with store.blob_writer() as writer:
        writer.write(b"never committed")
    assert ingest_entries(store) == [] and list(store.layout.blobs.iterdir()) == []


# -- files -------------------------------------------------------------------------------------


def test_import_file_copy_and_move(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    src = tmp_path / "model.gguf"
    src.write_bytes(b"GGUF" + os.urandom(5000))
    expected = sha256_digest(src.read_bytes())
    assert store.import_file(src, move=False) == expected
    assert src.exists() and store.has_file(expected)
    assert store.file_path(expected).read_bytes() == src.read_bytes()
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF other")
    moved = store.import_file(other, move=True)
    assert not other.exists() and store.file_path(moved).read_bytes() == b"GGUF other"
    assert store.import_file(src, move=True) == expected  # already present: source just goes away
    assert not src.exists()
    with pytest.raises(GGUFPackError, match="not a regular file"):
        store.import_file(tmp_path / "missing", move=False)
    assert ingest_entries(store) == []


def test_file_from_blob(tmp_path: Path) -> None:
    store = Store(tmp_path)
    payload = os.urandom(8192)
    layer_bytes = tar_bytes("model.gguf", payload)
    layer, _ = store.put_bytes(layer_bytes)
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as tar:
        member = tar.getmember("model.gguf")
    digest = store.file_from_blob(layer, member.offset_data, member.size, sha256_digest(payload))
    assert store.file_path(digest).read_bytes() == payload
    with pytest.raises(GGUFPackError, match="mismatch"):
        store.file_from_blob(layer, 0, 100, sha256_digest(payload))
    # A whole raw blob (ModelPack) becomes the same inode: counted once on disk.
    raw, _ = store.put_bytes(payload + b"raw")
    assert store.file_from_blob(raw) == raw
    assert os.path.samefile(store.blob_path(raw), store.file_path(raw))
    one = store.disk_usage([raw])
    assert one == store.blob_path(raw).stat().st_blocks * 512 > 0
    assert store.disk_usage([raw, layer]) > one
    assert store.total_disk_usage() >= store.disk_usage([raw, layer, digest])


# -- refs --------------------------------------------------------------------------------------


def test_set_ref_requires_committed_blobs(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ghost = Descriptor(MANIFEST, sha256_digest(b"ghost"), 5)
    with pytest.raises(GGUFPackError, match="not in the store"):
        store.set_ref("m", ghost, CREATED)
    real = make_image(store)
    with pytest.raises(GGUFPackError, match="bytes"):
        store.set_ref("m", Descriptor(MANIFEST, real.digest, real.size + 1), CREATED)
    with pytest.raises(GGUFPackError, match="files not in the store"):
        store.set_ref("m", real, CREATED, files=[sha256_digest(b"nofile")])
    with pytest.raises(GGUFPackError, match="RFC 3339"):
        store.set_ref("m", real, "yesterday")
    with pytest.raises(UsageError, match="lowercase"):
        store.set_ref("Model", real, CREATED)
    assert store.images() == []


def test_refs_lifecycle(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a, b = make_image(store, b"a"), make_image(store, b"b")
    assert store.set_ref("model", a, CREATED) == "model:latest"
    store.set_ref("model:v1", a, "2024-05-02T00:00:00Z")
    store.set_ref("other:x", b, CREATED)
    index = json.loads((tmp_path / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == ["model:latest", "model:v1", "other:x"]
    assert index["manifests"][1]["annotations"]["io.ggufpack.created"] == "2024-05-02T00:00:00Z"

    images = store.images()
    assert [i.refs for i in images] == [("model:latest", "model:v1"), ("other:x",)]
    assert images[0].created == "2024-05-02T00:00:00Z" and images[0].descriptor == a
    assert images[0].id == a.hex and images[0].short_id == a.hex[:12]

    assert store.resolve("model").descriptor == a
    assert store.resolve("model:v1").descriptor == a
    assert store.resolve(a.digest).descriptor == a
    assert store.resolve(a.hex).descriptor == a
    assert store.resolve(b.hex[:8]).descriptor == b
    assert store.resolve(f"sha256:{b.hex[:6]}").descriptor == b
    with pytest.raises(UsageError, match="ggufpack list"):
        store.resolve("nothing:here")
    with pytest.raises(UsageError, match="lowercase"):
        store.resolve("Nothing")

    # Moving a ref replaces its entry; an image keeps its other refs.
    store.set_ref("model:v1", b, CREATED)
    assert store.resolve("model:v1").descriptor == b
    assert store.resolve("model").descriptor == a

    assert store.tag("other:x", "localhost:5000/org/other") == "localhost:5000/org/other:latest"
    assert set(store.resolve("localhost:5000/org/other").refs) == {"model:v1", "other:x",
                                                                    "localhost:5000/org/other:latest"}
    assert store.remove("model:v1") == ["model:v1"]
    with pytest.raises(UsageError, match="referenced in multiple repositories: other:x, localhost"):
        store.remove(b.hex[:10])  # as Docker's rmi: refs of several repositories need force
    assert store.remove(b.hex[:10], force=True) == ["other:x", "localhost:5000/org/other:latest"]
    assert [i.refs for i in store.images()] == [("model:latest",)]
    assert store.has_blob(b.digest)  # blobs stay until prune


def _colliding_manifests(store: Store) -> tuple[Descriptor, Descriptor]:
    """Two stored blobs whose digests share their first 4 hex digits."""
    seen: dict[str, bytes] = {}
    for i in itertools.count():
        data = canonical_json({"schemaVersion": 2, "n": i})
        digest = sha256_digest(data)
        prefix = digest[7:11]
        if prefix in seen:
            first = seen[prefix]
            d1, s1 = store.put_bytes(first)
            d2, s2 = store.put_bytes(data)
            return Descriptor(MANIFEST, d1, s1), Descriptor(MANIFEST, d2, s2)
        seen[prefix] = data
    raise AssertionError("unreachable")


def test_ambiguous_prefix(tmp_path: Path) -> None:
    store = Store(tmp_path)
    one, two = _colliding_manifests(store)
    store.set_ref("one", one, CREATED)
    store.set_ref("two", two, CREATED)
    prefix = one.hex[:4]
    for text in (prefix, f"sha256:{prefix}"):
        with pytest.raises(UsageError, match="ambiguous") as info:
            store.resolve(text)
        assert one.hex[:12] in str(info.value) and two.hex[:12] in str(info.value)
        assert "one:latest" in str(info.value)
        with pytest.raises(UsageError, match="ambiguous"):
            store.remove(text)
    assert store.resolve(one.hex[:12]).refs == ("one:latest",)
    with pytest.raises(UsageError, match="at least 4"):
        store.resolve("sha256:ab")
    # A ref spelled like a hex prefix wins over the prefix, as in Docker.
    store.set_ref(prefix, two, CREATED)
    assert store.resolve(prefix).descriptor == two


def test_corrupt_index_reported(tmp_path: Path) -> None:
    store = Store(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(GGUFPackError, match=r"index\.json is not valid JSON"):
        store.images()


# -- prune -------------------------------------------------------------------------------------


def test_prune_keeps_reachable_and_extra_roots(tmp_path: Path) -> None:
    store = Store(tmp_path)
    tagged = make_image(store, b"tagged")
    nested = make_image(store, b"nested")
    index_digest, index_size, _ = store.put_json(
        {"schemaVersion": 2, "mediaType": INDEX, "manifests": [nested.to_json()]}
    )
    cached = make_image(store, b"cached")
    garbage = make_image(store, b"garbage")
    loose, _ = store.put_bytes(os.urandom(20000))

    file_src = tmp_path.parent / f"{tmp_path.name}-f"
    file_src.mkdir()
    (file_src / "kept.gguf").write_bytes(b"kept file")
    (file_src / "cached.gguf").write_bytes(b"cached file")
    (file_src / "junk.gguf").write_bytes(os.urandom(10000))
    kept_file = store.import_file(file_src / "kept.gguf", move=True)
    cached_file = store.import_file(file_src / "cached.gguf", move=True)
    junk_file = store.import_file(file_src / "junk.gguf", move=True)

    store.set_ref("tagged", tagged, CREATED, files=[kept_file])
    store.set_ref("multi", Descriptor(INDEX, index_digest, index_size), CREATED)
    (store.layout.ingest / "stale.tmp").write_bytes(b"left by a crash")

    def closure(d: Descriptor) -> set[str]:
        manifest = store.read_json(d.digest)
        return {d.digest, manifest["config"]["digest"], *(x["digest"] for x in manifest["layers"])}

    closures = {d.digest: closure(d) for d in (tagged, nested, cached, garbage)}
    with store.blob_writer() as inflight:
        inflight.write(b"in flight")
        result = store.prune(extra_roots=iter([cached.digest, cached_file]))
        assert len(ingest_entries(store)) == 1  # the live writer's temp survives
        inflight_digest, _ = inflight.commit()

    for image in (tagged, nested, cached):
        assert all(store.has_blob(x) for x in closures[image.digest])
    assert store.has_blob(index_digest)
    assert store.has_file(kept_file) and store.has_file(cached_file)
    assert not store.has_file(junk_file) and not store.has_blob(loose)
    gone = closures[garbage.digest].difference(*(closures[d.digest] for d in (tagged, nested, cached)))
    assert gone and not any(store.has_blob(x) for x in gone)
    assert result.blobs_removed == len(gone) + 1 and result.files_removed == 1
    assert result.temps_removed == 1 and result.bytes_freed >= 30000

    # Without the extra roots the cached image goes too; refs alone are what remains.
    second = store.prune()
    assert not store.has_blob(cached.digest) and not store.has_file(cached_file)
    assert second.files_removed == 1 and store.has_file(kept_file)
    assert not store.has_blob(inflight_digest)  # committed after the first prune, never named
    assert store.prune() == type(second)(0, 0, 0, 0)


def test_prune_waits_for_leases(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.lease(), store.lease():
        loose, _ = store.put_bytes(b"written by a build, not yet named")
        with pytest.raises(GGUFPackError, match="build or another prune"):
            store.prune()
        assert store.has_blob(loose)
    assert store.prune().blobs_removed == 1


def _served_image(store: Store, tmp_path: Path) -> tuple[Descriptor, str, set[str]]:
    """A tagged image with a runnable file, as ``run`` serves one: its descriptor, file and blobs."""
    image = make_image(store, b"served")
    source = tmp_path.parent / f"{tmp_path.name}-served.gguf"
    source.write_bytes(os.urandom(5000))
    file = store.import_file(source, move=True)
    store.set_ref("served:1", image, CREATED, files=[file])
    manifest = store.read_json(image.digest)
    return image, file, {image.digest, manifest["config"]["digest"], *(x["digest"] for x in manifest["layers"])}


def test_a_servers_lease_keeps_its_image_through_remove_and_prune_while_it_runs(tmp_path: Path) -> None:
    """A lease is an flock the server inherits: the image stays (by ID, listed untagged) while a holder
    lives, and goes with the first prune after the last one died, SIGKILL included (no pid is trusted)."""
    store = Store(tmp_path)
    image, file, blobs = _served_image(store, tmp_path)
    with store.lease():
        lease = store.hold(store.resolve("served:1"))
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], pass_fds=(lease.fd,))
    try:
        lease.hand_over()  # as ``run --detach`` does once its server answers: only the server holds it now
        assert store.remove("served:1") == ["served:1"]
        result = store.prune()
        assert (result.blobs_removed, result.files_removed, result.images_held) == (0, 0, 1)
        assert all(store.has_blob(b) for b in blobs) and store.has_file(file)
        held = store.resolve(image.hex[:12])  # a restart by ID finds it
        assert held.descriptor.digest == image.digest and held.refs == () and held.files == (file,)
        assert [r.descriptor.digest for r in store.held_images()] == [image.digest]
        store.set_ref("served:1", image, CREATED, files=[file])
        assert store.held_images() == []  # named again: an ordinary image
        store.remove("served:1")
    finally:
        server.kill()
        server.wait()
    assert store.held_images() == []
    with pytest.raises(UsageError, match="no image"):
        store.resolve(image.digest)
    result = store.prune()
    assert result.images_held == 0 and result.files_removed == 1 and result.blobs_removed == len(blobs)
    assert list(store.layout.state_dir("leases").iterdir()) == []  # the stale lease went too


def test_a_foreground_lease_ends_when_released(tmp_path: Path) -> None:
    store = Store(tmp_path)
    image, file, _ = _served_image(store, tmp_path)
    with store.lease():
        lease = store.hold(store.resolve("served:1"))
    with lease:
        store.remove(image.digest)
        assert store.prune().images_held == 1 and store.has_file(file) and store.has_blob(image.digest)
    assert list(store.layout.state_dir("leases").iterdir()) == []
    assert store.prune().files_removed == 1 and not store.has_blob(image.digest)


def test_lease_files_no_one_holds_keep_nothing(tmp_path: Path) -> None:
    """A lease file is read back from a store others can write: one no process holds (planted, or left by a
    dead server) keeps nothing and is deleted; a symlink is unlinked, never followed; a FIFO never blocks."""
    store = Store(tmp_path)
    image, file, _ = _served_image(store, tmp_path)
    leases = store.layout.state_dir("leases")
    leases.mkdir(parents=True)
    planted = {"image": image.to_json(), "created": CREATED, "files": [file]}
    (leases / f"{'ab' * 6}.json").write_text(json.dumps(planted))
    victim = tmp_path.parent / f"{tmp_path.name}-victim"
    victim.write_text("keep me")
    (leases / f"{'cd' * 6}.json").symlink_to(victim)
    os.mkfifo(leases / f"{'ef' * 6}.json")
    store.remove("served:1")
    assert store.held_images() == []
    result = store.prune()
    assert result.images_held == 0 and result.files_removed == 1 and not store.has_blob(image.digest)
    assert victim.read_text() == "keep me"
    assert list(leases.iterdir()) == []


def test_prune_counts_hard_links_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    raw, _ = store.put_bytes(os.urandom(50000))
    store.file_from_blob(raw)
    result = store.prune(extra_roots=[raw])
    assert result == type(result)(0, 0, 0, 0)
    blocks = store.blob_path(raw).stat().st_blocks * 512
    result = store.prune()
    assert (result.blobs_removed, result.files_removed, result.bytes_freed) == (1, 1, blocks)


# -- processes ---------------------------------------------------------------------------------

WRITER = r"""
import itertools, sys
from pathlib import Path
from ggufpack.oci.descriptor import Descriptor
from ggufpack.store import Store

store = Store(Path(sys.argv[1]))
print("ready", flush=True)
for i in itertools.count():
    with store.blob_writer() as w:
        w.write(("{\"n\":%d,\"pad\":\"%s\"}" % (i, "x" * 5000)).encode())
        digest, size = w.commit()
    store.set_ref(f"m{i % 5}:t{i % 3}", Descriptor("application/vnd.oci.image.manifest.v1+json", digest, size))
"""


def check_consistent(store: Store) -> int:
    """index.json parses, every ref resolves, and every named blob is complete."""
    index = json.loads((store.root / "index.json").read_bytes())
    for entry in index["manifests"]:
        ref = entry["annotations"]["org.opencontainers.image.ref.name"]
        record = store.resolve(ref)
        data = store.read_blob(record.descriptor.digest)
        assert sha256_digest(data) == entry["digest"] and len(data) == entry["size"]
        assert json.loads(data)["pad"] == "x" * 5000
    return len(index["manifests"])


def test_sigkill_never_leaves_partial_state(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rng = random.Random(1234)
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], env=child_env(), stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.005, 0.08))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        check_consistent(store)
    assert check_consistent(store) > 0
    store.prune()
    assert ingest_entries(store) == []
    check_consistent(store)


CONCURRENT = r"""
import sys, time
from pathlib import Path
from ggufpack.oci.descriptor import Descriptor
from ggufpack.store import Store

root, me, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
store = Store(root)
(root / f"ready-{me}").touch()
while not (root / f"ready-{other}").exists():
    time.sleep(0.001)
for i in range(40):
    digest, size = store.put_bytes(("{\"n\":%d,\"pad\":\"%s\",\"by\":\"%s\"}" % (i, "x" * 5000, me)).encode())
    shared, shared_size = store.put_bytes(("{\"n\":%d,\"pad\":\"%s\"}" % (i, "x" * 5000)).encode())
    d = "application/vnd.oci.image.manifest.v1+json"
    with store.lease():
        store.set_ref(f"{me}:n{i}", Descriptor(d, digest, size))
        store.set_ref("shared", Descriptor(d, shared, shared_size))
"""


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    Store(tmp_path)
    children = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path), me, other], env=child_env())
        for me, other in (("p", "q"), ("q", "p"))
    ]
    assert [c.wait(timeout=60) for c in children] == [0, 0]
    store = Store(tmp_path)
    refs = {r for image in store.images() for r in image.refs}
    expected = {f"{me}:n{i}" for me in "pq" for i in range(40)} | {"shared:latest"}
    assert refs == expected
    assert check_consistent(store) == len(expected)
    assert ingest_entries(store) == []


def test_hash_helper_matches_hashlib(tmp_path: Path) -> None:
    """Files larger than one hashing chunk are hashed whole."""
    store = Store(tmp_path / "s")
    src = tmp_path / "big"
    data = os.urandom((8 << 20) + 123)
    src.write_bytes(data)
    assert store.import_file(src, move=True) == "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.skipif(
    not os.environ.get("GGUFPACK_TEST_REFLINK_DIR"),
    reason="set GGUFPACK_TEST_REFLINK_DIR to a directory on XFS or btrfs to test shared extents",
)
def test_reflink_shares_extents() -> None:
    base = Path(os.environ["GGUFPACK_TEST_REFLINK_DIR"]) / f"t{os.getpid()}"
    try:
        store = Store(base / "store")
        src = base / "model.gguf"
        data = os.urandom(16 << 20)
        src.write_bytes(data)
        os.sync()
        free_before = os.statvfs(base).f_bfree
        with store.blob_writer() as writer:
            writer.write(b"\0" * 4096)
            assert writer.write_from_file(src)
            blob, _ = writer.commit()
        assert store.file_from_blob(blob, 4096, len(data)) == sha256_digest(data)
        assert store.import_file(src, move=False) == sha256_digest(data)
        os.sync()
        used = (free_before - os.statvfs(base).f_bfree) * os.statvfs(base).f_frsize
        assert used < len(data) // 4  # three copies of 16 MiB, sharing one set of extents
        with store.blob_writer() as writer:
            writer.write(b"x" * 10)  # misaligned: falls back to a plain copy
            assert not writer.write_from_file(src)
            writer.commit(sha256_digest(b"x" * 10 + data))
    finally:
        shutil.rmtree(base, ignore_errors=True)
