"""ADD in real builds: URLs from a loopback HTTP server, and local git repositories."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ggufpack.errors import GGUFPackError
from ggufpack.store import Store

from .helpers.builds import cli_main, do_build, image_tree, tiny_gguf_bytes, write_context
from .helpers.gitrepo import Repo, git, make_repo
from .helpers.httpserver import LoopbackHTTPServer

PAYLOAD = bytes(range(256)) * 2048  # 512 KiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CMD = 'CMD ["-m", "/m.gguf"]\n'


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_gguf_bytes(tmp_path_factory.mktemp("gguf"))


@pytest.fixture
def server() -> LoopbackHTTPServer:
    with LoopbackHTTPServer() as srv:
        srv.add_file("/files/weights.bin", PAYLOAD)
        yield srv


def _context(tmp_path: Path, gguf_bytes: bytes, add_line: str) -> Path:
    return write_context(tmp_path / "ctx", f"FROM scratch\nCOPY m.gguf /m.gguf\n{add_line}\n{CMD}",
                         {"m.gguf": gguf_bytes})


# -- http ---------------------------------------------------------------------------------------------


def test_add_url_with_good_checksum(tmp_path: Path, gguf_bytes: bytes, server: LoopbackHTTPServer) -> None:
    url = server.url("/files/weights.bin")
    context = _context(tmp_path, gguf_bytes, f"ADD --checksum=sha256:{PAYLOAD_SHA} {url} /data/")
    store = Store(tmp_path / "home")
    result = do_build(store, context)
    assert image_tree(store, result.image.manifest)["data/weights.bin"] == ("file", 0o600, PAYLOAD)
    served = len(server.requests)
    # the checksum names the content: a rebuild neither downloads nor runs anything
    again = do_build(store, context)
    assert again.stats.ops_run == 0 and len(server.requests) == served


def test_add_url_bad_checksum_fails_cleanly_and_leaves_index(
    tmp_path: Path, gguf_bytes: bytes, server: LoopbackHTTPServer, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = server.url("/files/weights.bin")
    home = tmp_path / "home"
    context = _context(tmp_path, gguf_bytes, f"ADD {url} /data/")
    assert cli_main(["build", "-q", "-t", "sample:1", str(context)], home, capsys, monkeypatch).code == 0
    index = (home / "index.json").read_bytes()

    _context(tmp_path, gguf_bytes, f"ADD --checksum=sha256:{'0' * 64} {url} /data/")
    run = cli_main(["build", "-q", "-t", "sample:1", str(context)], home, capsys, monkeypatch)
    assert run.code == 1
    assert "checksum mismatch" in run.err and f"sha256:{PAYLOAD_SHA}" in run.err
    assert "Traceback" not in run.err and run.out == ""
    assert (home / "index.json").read_bytes() == index
    assert list((home / "ingest").iterdir()) == []  # no build scratch left behind


def test_add_url_follows_redirect(tmp_path: Path, gguf_bytes: bytes, server: LoopbackHTTPServer) -> None:
    server.add_redirect("/latest", "/files/weights.bin", status=301)
    context = _context(tmp_path, gguf_bytes, f"ADD {server.url('/latest')} /data/model.bin")
    store = Store(tmp_path / "home")
    result = do_build(store, context)
    assert image_tree(store, result.image.manifest)["data/model.bin"][2] == PAYLOAD
    assert [r.path for r in server.requests] == ["/latest", "/files/weights.bin"]


def test_add_url_404_is_a_clear_failure(
    tmp_path: Path, gguf_bytes: bytes, server: LoopbackHTTPServer, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    context = _context(tmp_path, gguf_bytes, f"ADD {server.url('/missing.gguf')} /data/")
    run = cli_main(["build", "-q", "-t", "x", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert run.code == 1
    assert "HTTP 404" in run.err and "Traceback" not in run.err
    assert f"{context}/GGUFPackerfile:3:1: " in run.err  # the failing instruction's position
    assert Store(tmp_path / "home").images() == []


def test_add_url_connection_cut_resumes_or_fails(
    tmp_path: Path, gguf_bytes: bytes, server: LoopbackHTTPServer, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.add_file("/cut-once.bin", PAYLOAD, cut_after=100_000)
    context = _context(tmp_path, gguf_bytes, f"ADD --checksum=sha256:{PAYLOAD_SHA} {server.url('/cut-once.bin')} /d/")
    store = Store(tmp_path / "home")
    result = do_build(store, context)
    assert image_tree(store, result.image.manifest)["d/cut-once.bin"][2] == PAYLOAD
    assert [r.range for r in server.requests if r.path == "/cut-once.bin"] == [None, "bytes=100000-"]

    # a server that cannot resume and always cuts: the build fails, naming the interruption
    server.add_file("/cut-always.bin", PAYLOAD, cut_after=1000, cut_times=99, ranges=False)
    _context(tmp_path, gguf_bytes, f"ADD {server.url('/cut-always.bin')} /d/")
    run = cli_main(["build", "-q", "-t", "x", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert run.code == 1
    assert "interrupted" in run.err and "Traceback" not in run.err


def test_add_url_without_checksum_reruns_only_when_content_changes(
    tmp_path: Path, gguf_bytes: bytes, server: LoopbackHTTPServer
) -> None:
    context = _context(tmp_path, gguf_bytes, f"ADD {server.url('/files/weights.bin')} /data/")
    store = Store(tmp_path / "home")
    first = do_build(store, context)
    assert do_build(store, context).stats.ops_run == 0
    server.add_file("/files/weights.bin", PAYLOAD[::-1])
    changed = do_build(store, context)
    assert changed.stats.run_ops == ["0:ADD:3"]
    assert image_tree(store, changed.image.manifest)["data/weights.bin"][2] == PAYLOAD[::-1]
    assert changed.descriptor != first.descriptor


# -- git ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return make_repo(tmp_path_factory.mktemp("git"))


def _git_build(tmp_path: Path, gguf_bytes: bytes, source: str, *, flags: str = "") -> dict[str, tuple]:
    store = Store(tmp_path / "home")
    context = _context(tmp_path, gguf_bytes, f"ADD {flags} {source} /src/")
    result = do_build(store, context)
    return {k[4:]: v for k, v in image_tree(store, result.image.manifest).items() if k.startswith("src/")}


@pytest.mark.parametrize(("ref", "readme", "has_dev"), [
    ("", b"four\n", False), ("#main", b"four\n", False), ("#dev", b"two\n", True), ("#v1.0", b"two\n", False),
    ("#c1", b"one\n", False), ("#c1-short", b"one\n", False),
])
def test_add_git_refs(tmp_path: Path, gguf_bytes: bytes, repo: Repo, ref: str, readme: bytes, has_dev: bool) -> None:
    if ref == "#c1":
        ref = "#" + repo.commits["c1"]
    elif ref == "#c1-short":
        ref = "#" + repo.commits["c1"][:10]
    tree = _git_build(tmp_path, gguf_bytes, repo.url + ref)
    assert tree["README.md"][2] == readme
    assert tree["model/config.json"][2] == b'{"a": 1}\n'
    assert ("dev.txt" in tree) == has_dev
    assert not any(name == ".git" or name.startswith(".git/") for name in tree)


def test_add_git_keep_git_dir(tmp_path: Path, gguf_bytes: bytes, repo: Repo) -> None:
    tree = _git_build(tmp_path, gguf_bytes, repo.url + "#v1.0", flags="--keep-git-dir")
    assert tree["README.md"][2] == b"two\n"
    assert tree[".git"][0] == "dir" and tree[".git/HEAD"][0] == "file"
    head = tree[".git/HEAD"][2]
    assert isinstance(head, bytes) and repo.commits["c2"].encode() in head


def test_add_git_is_cached_by_commit(tmp_path: Path, gguf_bytes: bytes, tmp_path_factory: pytest.TempPathFactory
                                     ) -> None:
    own = make_repo(tmp_path_factory.mktemp("own-git"))
    store = Store(tmp_path / "home")
    context = _context(tmp_path, gguf_bytes, f"ADD {own.url}#main /src/")
    do_build(store, context)
    assert do_build(store, context).stats.ops_run == 0
    # a new commit on the branch is a new input
    work = own.bare.parent / "work"
    (work / "new.txt").write_text("new\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "c5", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    result = do_build(store, context)
    assert result.stats.run_ops == ["0:ADD:3"]
    assert image_tree(store, result.image.manifest)["src/new.txt"][2] == b"new\n"


def test_add_git_unknown_ref_fails(tmp_path: Path, gguf_bytes: bytes, repo: Repo) -> None:
    with pytest.raises(GGUFPackError, match="not found"):
        _git_build(tmp_path, gguf_bytes, repo.url + "#no-such-branch")
