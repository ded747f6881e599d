"""Hostile store state: what ggufpack reads back, writes into, deletes from or runs out of its own store,
when someone else could write that store (a shared store, an unpacked archive).

Siblings of the run-record defects of issue 12 (item 9): an upload resume point that sends blob bytes
to another host, build-cache records read without bound and deleted through a symlinked directory,
split-model links written through a symlinked ``state/run``, backend tools run whoever could change
them, and a full disk mid-download whose partial file is not accounted for.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ggufpack import cli
from ggufpack.backends import Backend
from ggufpack.engine.cache import BuildCache
from ggufpack.errors import DiskFullError, GGUFPackError
from ggufpack.image.layers import LayerResult
from ggufpack.oci import mediatypes as mt
from ggufpack.oci.descriptor import Descriptor
from ggufpack.progress import Progress
from ggufpack.registry.client import RegistryClient
from ggufpack.registry.push import Pusher, _UploadState
from ggufpack.run.image import RunnableImage
from ggufpack.store import Store
from tests.helpers import llamacpp_build
from tests.helpers.bounded import assert_clean, run_bounded
from tests.helpers.hostileregistry import Answer, HostileRegistry, digest_of

BUDGET_MB = 256
SECONDS = 20


class _Bar:
    def update(self, n: int) -> None:
        pass


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    monkeypatch.setenv("GGUFPACK_HOME", str(root))
    monkeypatch.delenv("GGUFPACK_BACKENDS_PATH", raising=False)
    return root


# --- 1. push: a planted upload resume point -----------------------------------------------------------


def _upload_routes(reg: HostileRegistry, repository: str, session: str, base: str = "") -> None:
    """A registry that lacks every blob and takes an upload at ``session`` (its Location ``base + session``)."""
    location = [("Location", base + session)]
    reg.set("POST", f"/v2/{repository}/blobs/uploads/", Answer(202, location))
    reg.set("PATCH", session, Answer(202, location))
    reg.set("PUT", session, Answer(201))


def _push_one(home: Path, reg: HostileRegistry, data: bytes, planted: str | None,
              capsys: pytest.CaptureFixture[str]) -> tuple[Pusher, str]:
    """Push a blob of ``data`` to ``reg``'s ``r`` with ``planted`` as its saved resume point; (pusher, stderr)."""
    store = Store(home)
    digest, size = store.put_bytes(data)
    client = RegistryClient(reg.host, reg.settings, None)
    if planted is not None:
        state = _UploadState(store, client.registry, "r", digest)
        state.path.parent.mkdir(parents=True, exist_ok=True)
        state.path.write_text(json.dumps({"location": planted, "offset": 0}))
    pusher = Pusher(store, client, "r", Progress("plain"), jobs=1)
    pusher.push_blob(Descriptor(mt.OCI_LAYER_TAR, digest, size), _Bar())
    return pusher, capsys.readouterr().err


@pytest.mark.parametrize("shape", ["absolute", "upper-case scheme", "userinfo", "https"])
def test_sibling_upload_resume_point_on_another_host_is_dropped(home: Path, capsys: pytest.CaptureFixture[str],
                                                                shape: str) -> None:
    """A resume file pointing at another origin used to get the blob's bytes PATCHed there."""
    with HostileRegistry() as reg, HostileRegistry() as evil:
        _upload_routes(reg, "r", "/v2/r/blobs/uploads/fresh")
        stolen = "/v2/r/blobs/uploads/stolen?_state=x"
        evil.set("GET", "/v2/r/blobs/uploads/stolen", Answer(204, [("Range", "0-0")]))
        _upload_routes(evil, "r", "/v2/r/blobs/uploads/stolen", evil.url)
        planted = {
            "absolute": f"{evil.url}{stolen}",
            "upper-case scheme": f"HTTP://{evil.host}{stolen}",
            "userinfo": f"http://{reg.host}@{evil.host}{stolen}",
            "https": f"https://{reg.host}{stolen}",  # the registry's host and port, but not its scheme
        }[shape]
        data = os.urandom(1000)
        pusher, err = _push_one(home, reg, data, planted, capsys)
        assert evil.requests == [], "blob bytes went to the host a planted resume point named"
        patches = [r for r in reg.requests if r.method == "PATCH"]
        assert [r.path for r in patches] == ["/v2/r/blobs/uploads/fresh"]
    assert pusher.stats.resumed == 0 and pusher.stats.sent == 1
    assert "ignoring the saved upload point" in err and f"it is not on {reg.host}" in err
    assert "/stolen" in err and "_state=x" not in err  # the session query is a secret: not printed
    assert not list((home / "state" / "uploads").glob("*.json"))  # dropped, and the finished upload left none


@pytest.mark.parametrize("shape", ["relative", "absolute"])
def test_sibling_upload_resume_point_on_the_registry_still_resumes(home: Path, capsys: pytest.CaptureFixture[str],
                                                                   shape: str) -> None:
    with HostileRegistry() as reg:
        session = "/v2/r/blobs/uploads/cut"
        reg.set("GET", session, Answer(204, [("Range", "0-499")]))
        _upload_routes(reg, "r", session)
        pusher, err = _push_one(home, reg, os.urandom(1000), session if shape == "relative" else reg.url + session,
                                capsys)
        patches = [r for r in reg.requests if r.method == "PATCH"]
    assert pusher.stats.resumed == 1 and "ignoring" not in err
    assert len(patches) == 1 and patches[0].headers["Content-Range"] == "500-999"


# --- 2. the build cache: records read back, and ``prune --cache`` ---------------------------------------


def _plant_records(store: Store) -> None:
    ops, layers = store.root / "cache" / "ops", store.root / "cache" / "layers"
    ops.mkdir(parents=True, exist_ok=True)
    layers.mkdir(parents=True, exist_ok=True)
    os.mkfifo(ops / ("a" * 64 + ".json"))
    (ops / ("b" * 64 + ".json")).symlink_to("/dev/zero")
    (layers / ("c" * 64 + ".json")).symlink_to("/dev/zero")
    os.mkfifo(layers / ("d" * 64 + ".json"))


def _read_planted(root: Path) -> tuple[object, ...]:
    cache = BuildCache(Store(root))
    return (cache.lookup("a" * 64), cache.lookup("b" * 64), cache.layers.layer("sha256:" + "c" * 64),
            cache.layers.layer("sha256:" + "d" * 64), list(cache.roots()))


def test_sibling_build_cache_records_that_are_fifos_or_dev_zero_are_misses(tmp_path: Path) -> None:
    """A record that is a FIFO used to hang every build (and prune); one linked to /dev/zero, to exhaust memory."""
    _plant_records(Store(tmp_path / "home"))
    outcome = assert_clean(run_bounded(_read_planted, tmp_path / "home", budget_mb=BUDGET_MB, seconds=SECONDS))
    assert outcome.kind == "ok" and outcome.value == (None, None, None, None, [])


def _record(store: Store) -> LayerResult:
    digest, size = store.put_bytes(b"layer")
    return LayerResult(Descriptor(mt.OCI_LAYER_TAR, digest, size), digest, {})


@pytest.mark.parametrize("linked", ["cache/ops", "cache"])
def test_sibling_prune_cache_never_deletes_through_a_symlinked_directory(home: Path, tmp_path: Path,
                                                                         linked: str) -> None:
    """``prune --cache`` used to delete every ``*.json`` in whatever directory ``cache/ops`` pointed at."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "ops").mkdir(parents=True)
    precious = [elsewhere / "settings.json", elsewhere / "ops" / "mine.json"]
    for path in precious:
        path.write_text('{"mine": true}')
    store = Store(home)
    if linked == "cache":
        shutil.rmtree(home / "cache")
        (home / "cache").symlink_to(elsewhere)
    else:
        (home / "cache" / "ops").symlink_to(elsewhere)
    assert cli.main(["prune", "--cache"]) == 0
    assert all(path.read_text() == '{"mine": true}' for path in precious)
    cache = BuildCache(store)
    assert cache.clear() == 0 and all(path.exists() for path in precious)
    with pytest.raises(GGUFPackError, match="is a symlink or not a directory"):  # nor is a record written there
        cache.record("e" * 64, _record(store))
    assert sorted(p.name for p in elsewhere.rglob("*")) == ["mine.json", "ops", "settings.json"]


def test_sibling_prune_cache_deletes_the_records_of_a_real_cache(home: Path) -> None:
    store = Store(home)
    cache = BuildCache(store)
    cache.record("e" * 64, _record(store))
    (home / "cache" / "ops" / "link.json").symlink_to(home / "index.json")  # not a record: left alone
    assert cache.lookup("e" * 64) is not None
    assert cache.clear() == 1
    assert cache.lookup("e" * 64) is None and (home / "index.json").is_file()


# --- 3. split-model links under state/run -----------------------------------------------------------------


SHARDS = ("models/m-00001-of-00002.gguf", "models/m-00002-of-00002.gguf")


def _split_image(store: Store) -> RunnableImage:
    files = {name: "sha256:" + hashlib.sha256(name.encode()).hexdigest() for name in SHARDS}
    return RunnableImage(store, "split:1", "sha256:" + "f" * 64, ("-m", f"/{SHARDS[0]}"), files)


@pytest.mark.parametrize("linked", ["state/run", "state/run/links", f"state/run/links/{'f' * 64}",
                                    f"state/run/links/{'f' * 64}/models"])
def test_sibling_split_model_links_are_never_written_through_a_symlinked_state_dir(home: Path, tmp_path: Path,
                                                                                  linked: str) -> None:
    """``run`` of a split model used to make its links inside whatever ``state/run`` pointed at."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = Store(home)
    (home / linked).parent.mkdir(parents=True, exist_ok=True)
    (home / linked).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(GGUFPackError, match=f"{home / linked} is a symlink or not a directory"):
        _split_image(store).host_path(f"/{SHARDS[0]}")
    assert list(elsewhere.iterdir()) == []


def test_sibling_split_model_links_in_a_real_state_dir(home: Path) -> None:
    store = Store(home)
    image = _split_image(store)
    first = image.host_path(f"/{SHARDS[0]}")
    assert first == home / "state" / "run" / "links" / ("f" * 64) / SHARDS[0]
    for name in SHARDS:
        link = first.parent / Path(name).name
        assert link.is_symlink() and Path(os.readlink(link)) == store.file_path(image.files[name])
    assert image.host_path(f"/{SHARDS[1]}") == first  # again: the links are there already


# --- 4. backends: tools run only when nobody else could have changed them ---------------------------------


needs_tools = pytest.mark.skipif(not llamacpp_build.build_available(), reason="needs the built llama.cpp CPU tools")


@pytest.fixture
def tool_dir(tmp_path: Path) -> Iterator[Path]:
    """A sideload directory holding a copy of the real built ``llama-quantize``."""
    directory = tmp_path / "tools"
    directory.mkdir()
    shutil.copy2(llamacpp_build.built_cpu_dir() / "bin" / "llama-quantize", directory / "llama-quantize")
    os.chmod(directory / "llama-quantize", 0o755)
    yield directory
    directory.chmod(0o755)


def _sideloaded(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    from ggufpack.backends import list_backends
    from ggufpack.backends.sideload import derived_name

    monkeypatch.setenv("GGUFPACK_BACKENDS_PATH", str(directory))
    name = derived_name(directory.resolve())
    return {b.name: b for b in list_backends()}[name]


def _nogroup() -> int:
    try:
        return grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return 65534


@needs_tools
@pytest.mark.parametrize("how", ["tool world-writable", "directory world-writable", "tool group-writable"])
def test_sibling_backend_tool_writable_by_others_is_refused(home: Path, tool_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], how: str) -> None:
    """A sideloaded tool that others could have changed used to be probed (run) by ``backends list`` and by
    ``--backend``."""
    tool = tool_dir / "llama-quantize"
    if how == "tool world-writable":
        tool.chmod(0o757)
        culprit = tool
    elif how == "directory world-writable":
        tool_dir.chmod(0o777)
        culprit = tool_dir
    else:
        if os.geteuid() != 0:
            pytest.skip("giving the tool to another group needs root")
        os.chown(tool, -1, _nogroup())  # a group that is not the user's own
        tool.chmod(0o775)
        culprit = tool
    backend = _sideloaded(tool_dir, monkeypatch)
    assert "quantize" not in backend.capabilities  # it was not run to find out
    assert any(f"{culprit} is writable by" in p and "chmod go-w" in p for p in backend.problems), backend.problems
    with pytest.raises(GGUFPackError, match=rf"refusing to use .*{tool}: {culprit} is writable by .*chmod go-w"):
        backend.tool("llama-quantize")
    from ggufpack.backends import resolve_backend

    with pytest.raises(GGUFPackError, match=rf"cannot quantize .*{culprit} is writable by"):
        resolve_backend(backend.name, "quantize")
    assert cli.main(["backends", "list"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {backend.name}: llama-quantize was not run: {culprit} is writable by" in err


@needs_tools
def test_sibling_backend_tool_that_only_we_can_change_still_runs(home: Path, tool_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _sideloaded(tool_dir, monkeypatch)
    assert "quantize" in backend.capabilities and backend.problems == ()
    assert backend.tool("llama-quantize") == tool_dir.resolve() / "llama-quantize"
    tool_dir.chmod(0o777)  # made unsafe after it was probed: refused at use, and probed again
    with pytest.raises(GGUFPackError, match=f"{tool_dir.resolve()} is writable by anyone"):
        backend.tool("llama-quantize")
    assert "quantize" not in _sideloaded(tool_dir, monkeypatch).capabilities
    tool_dir.chmod(0o755)  # fixed: usable again (the record is probed afresh)
    assert "quantize" in _sideloaded(tool_dir, monkeypatch).capabilities


@needs_tools
@pytest.mark.parametrize("unsafe", ["home", "home/backends"])
def test_sibling_built_backend_in_a_store_others_can_write_is_refused(home: Path, unsafe: str) -> None:
    from ggufpack.backends import resolve_backend

    Store(home)
    llamacpp_build.install_into(home)
    backend = resolve_backend(llamacpp_build.VARIANT, "quantize")
    assert backend.tool("llama-quantize").name == "llama-quantize"  # safe: it runs
    directory = home.parent / unsafe
    directory.chmod(0o777)
    try:
        with pytest.raises(GGUFPackError, match=f"{directory} is writable by anyone: run: chmod go-w {directory}"):
            backend.tool("llama-quantize")
    finally:
        directory.chmod(0o755)


def test_sibling_backends_config_others_can_write_is_refused(home: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``config/backends.json`` names directories whose tools ``backends list`` runs."""
    config = home / "config" / "backends.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"dirs": [{"path": str(tmp_path / "anywhere"), "name": "x"}]}))
    config.chmod(0o666)
    assert cli.main(["backends", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to use the sideload configuration") and "Traceback" not in err
    assert f"{config} is writable by anyone: run: chmod go-w {config}" in err
    config.chmod(0o644)
    assert cli.main(["backends", "list"]) == 0


def test_sibling_backends_config_that_is_a_fifo_is_a_clear_error(home: Path) -> None:
    config = home / "config" / "backends.json"
    config.parent.mkdir(parents=True)
    os.mkfifo(config)

    def listed() -> int:
        from ggufpack.backends import list_backends

        return len(list_backends())

    outcome = run_bounded(listed, budget_mb=BUDGET_MB, seconds=SECONDS)
    assert outcome.kind == "ours" and "is not a regular file" in outcome.message, str(outcome)


# --- 5. the small file system helper ----------------------------------------------------------------------


def test_sibling_small_tmpfs_helper_fills_up_and_goes_away(tmp_path: Path) -> None:
    """One helper mounts the small tmpfs for ``test_enospc.py`` and this module (``run_on_small_tmpfs``'s twin)."""
    from tests.helpers.smallfs import small_tmpfs

    with small_tmpfs(tmp_path / "small", "256k") as mount:
        with pytest.raises(OSError, match="No space left on device"), (mount / "f").open("wb") as f:
            for _ in range(128):
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        assert os.path.ismount(mount)
    assert not os.path.ismount(mount) and list(mount.iterdir()) == []


# --- 6. a full disk in the middle of a download -----------------------------------------------------------


def test_sibling_enospc_mid_download_says_what_was_kept_and_prune_reclaims_it(tmp_path: Path) -> None:
    from ggufpack.registry.download import fetch_blob
    from tests.helpers.smallfs import small_tmpfs

    data = os.urandom(3 << 20)
    with HostileRegistry() as reg, small_tmpfs(tmp_path / "small", "1m") as mount:
        digest = digest_of(data)
        reg.set("GET", f"/v2/r/blobs/{digest}", Answer(200, [], data))
        store = Store(mount / "home")
        with pytest.raises(DiskFullError) as info:
            fetch_blob(store, RegistryClient(reg.host, reg.settings, None), "r",
                       Descriptor(mt.OCI_LAYER_TAR, digest, len(data)), _Bar())
        partial = mount / "home" / "state" / "downloads" / f"{digest.split(':')[1]}.partial"
        kept = partial.stat().st_size
        message = str(info.value)
        assert kept > 0 and f"while writing {partial}" in message
        assert "of the 3.00 MiB of blob" in message and "are kept there" in message, message
        assert "resumes" in message and "run ggufpack prune" in message, message
        assert stat.S_ISREG(partial.lstat().st_mode)
        result = store.prune()  # what `ggufpack prune` runs
        assert not partial.exists() and result.bytes_freed >= kept - 4096


# --- 7. registry state directories planted as symlinks ------------------------------------------------------


@pytest.mark.parametrize("linked", ["state", "state/downloads"])
def test_sibling_partial_downloads_are_never_written_through_a_symlinked_state_dir(home: Path, tmp_path: Path,
                                                                                  linked: str) -> None:
    from ggufpack.registry.download import fetch_blob

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / linked).parent.mkdir(parents=True, exist_ok=True)
    (home / linked).symlink_to(elsewhere, target_is_directory=True)
    data = os.urandom(4096)
    with HostileRegistry() as reg:
        digest = digest_of(data)
        reg.set("GET", f"/v2/r/blobs/{digest}", Answer(200, [], data))
        with pytest.raises(GGUFPackError, match=f"{home / linked} is a symlink or not a directory"):
            fetch_blob(Store(home), RegistryClient(reg.host, reg.settings, None), "r",
                       Descriptor(mt.OCI_LAYER_TAR, digest, len(data)), _Bar())
    assert list(elsewhere.iterdir()) == []


def test_sibling_known_blobs_are_never_written_through_a_symlinked_state_dir(home: Path, tmp_path: Path) -> None:
    from ggufpack.registry.known_blobs import KnownBlobs

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "state").mkdir(parents=True, exist_ok=True)
    (home / "state" / "known-blobs").symlink_to(elsewhere, target_is_directory=True)
    known = KnownBlobs(Store(home))
    with pytest.raises(GGUFPackError, match="is a symlink or not a directory"):
        known.add("registry.example", "team/model", "sha256:" + "0" * 64)
    assert list(elsewhere.iterdir()) == []
    assert known.repositories("registry.example", "sha256:" + "0" * 64) == []


def test_sibling_known_blobs_file_that_is_a_symlink_is_read_as_empty(home: Path, tmp_path: Path) -> None:
    from ggufpack.registry.known_blobs import KnownBlobs

    known = KnownBlobs(Store(home))
    known.add("registry.example", "team/model", "sha256:" + "1" * 64)
    assert known.repositories("registry.example", "sha256:" + "1" * 64) == ["team/model"]
    [path] = (home / "state" / "known-blobs").glob("*.json")
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps({"sha256:" + "1" * 64: ["evil/repo"]}))
    path.unlink()
    path.symlink_to(planted)
    assert known.repositories("registry.example", "sha256:" + "1" * 64) == []
