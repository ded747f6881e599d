"""Safety: killed builds leave a consistent store, concurrent builds, and nothing escapes its destination."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.oci.extract import extract_layer
from ggufpack.store import Store

from .helpers.builds import (
    cli_env,
    dangling,
    do_build,
    have,
    image_tree,
    make_big_gguf,
    run_cli,
    skopeo,
    tiny_gguf_bytes,
    write_context,
)
from .helpers.httpserver import LoopbackHTTPServer

BIG_PACKERFILE = """\
ARG N=0
FROM scratch
COPY big.gguf /models/
CAT <<EOF /run.txt
run ${N}
EOF
CMD ["-m", "/models/big.gguf"]
"""


@pytest.fixture(scope="module")
def big_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = write_context(tmp_path_factory.mktemp("big") / "ctx", BIG_PACKERFILE)
    make_big_gguf(context / "big.gguf", 48)
    return context


def _check_store(home: Path) -> None:
    store = Store(home)
    assert dangling(store) == []
    if have("skopeo"):
        for record in store.images():
            for ref in record.refs:
                result = skopeo("inspect", f"oci:{home}:{ref}")
                assert result.returncode == 0, (ref, result.stderr)
                assert json.loads(result.stdout)["Digest"] == record.descriptor.digest


def _start_build(home: Path, context: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ggufpack", "build", "-q", *args, str(context)], env=cli_env(home),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigkill_at_random_points_leaves_a_readable_store(tmp_path: Path, big_context: Path) -> None:
    home = tmp_path / "home"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    # one finished build first, so there are refs the killed builds must not break
    assert run_cli(["build", "-q", "-t", "big:base", str(big_context)], home).code == 0
    outcomes = []
    for attempt in range(6):
        proc = _start_build(home, big_context, "--no-cache", "-t", "big:latest", "-t", f"big:{attempt}",
                            "--build-arg", f"N={attempt}")
        delay = rng.uniform(0.1, 1.0)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        proc.communicate()
        outcomes.append((round(delay, 2), code))
        try:
            _check_store(home)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, kills so far {outcomes}: {exc}") from exc
    assert any(code == -signal.SIGKILL for _, code in outcomes), f"no build was killed (seed {seed}): {outcomes}"
    after = run_cli(["build", "-q", "-t", "big:latest", "--build-arg", "N=final", str(big_context)], home)
    assert after.code == 0, after.err
    _check_store(home)
    # nothing from the killed builds is reachable, and prune cleans up what they left
    assert run_cli(["prune"], home).code == 0
    _check_store(home)
    assert [p.name for p in (home / "ingest").iterdir() if p.name.startswith("build-")] == []


@pytest.mark.slow
def test_two_builds_into_one_store_at_once(tmp_path: Path, big_context: Path) -> None:
    home = tmp_path / "home"
    procs = [
        _start_build(home, big_context, "-t", f"twin:{i}", "--build-arg", f"N={i}") for i in range(2)
    ]
    results = [(p.wait(), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    digests = [out.decode().strip() for _, out, _ in results]
    store = Store(home)
    by_ref = {ref: r.descriptor.digest for r in store.images() for ref in r.refs}
    assert by_ref == {"twin:0": digests[0], "twin:1": digests[1]}
    _check_store(home)


# -- nothing escapes its destination ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_gguf_bytes(tmp_path_factory.mktemp("gguf"))


def _build(tmp_path: Path, gguf_bytes: bytes, lines: str, files: dict[str, bytes] | None = None) -> dict:
    text = f'FROM scratch\nCOPY m.gguf /m.gguf\n{lines}\nCMD ["-m", "/m.gguf"]\n'
    context = write_context(tmp_path / "ctx", text, {"m.gguf": gguf_bytes, **(files or {})})
    store = Store(tmp_path / "home")
    return image_tree(store, do_build(store, context).image.manifest)


@pytest.mark.parametrize("source", ["../secret.txt", "sub/../../secret.txt", "/../secret.txt", "../ctx/../secret.txt"])
def test_sources_cannot_climb_out_of_the_context(tmp_path: Path, gguf_bytes: bytes, source: str) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "ctx" / "sub").mkdir(parents=True)
    with pytest.raises(UsageError, match="outside the build context"):
        _build(tmp_path, gguf_bytes, f"COPY {source} /x")
    with pytest.raises(UsageError, match="outside the build context"):
        _build(tmp_path, gguf_bytes, f"ADD {source} /x")


def test_destinations_stay_inside_the_image(tmp_path: Path, gguf_bytes: bytes) -> None:
    marker = f"ggufpack-escape-{os.getpid()}"
    tree = _build(tmp_path, gguf_bytes, f"COPY a.txt ../../../../tmp/{marker}\nCAT <<EOF ../../{marker}.cat\nx\nEOF",
                  {"a.txt": b"a"})
    assert tree[f"tmp/{marker}"][2] == b"a"
    assert tree[f"{marker}.cat"][2] == b"x\n"
    assert not any(".." in name.split("/") or name.startswith("/") for name in tree)
    assert not Path("/tmp", marker).exists() and not Path("/", f"{marker}.cat").exists()


def test_absolute_symlinks_in_the_context(tmp_path: Path, gguf_bytes: bytes) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret")
    context = tmp_path / "ctx"
    (context / "dir").mkdir(parents=True)
    os.symlink(secret, context / "outside-link")
    os.symlink("/etc", context / "dir" / "etc-link")
    os.symlink(context / "real.txt", context / "inside-link")
    (context / "real.txt").write_bytes(b"real")

    # a source that is a symlink out of the context is refused, never followed
    with pytest.raises(UsageError, match="outside the build context"):
        _build(tmp_path, gguf_bytes, "COPY outside-link /x")
    # an absolute link to a file inside the context is followed inside it
    tree = _build(tmp_path, gguf_bytes, "COPY inside-link /x")
    assert tree["x"][2] == b"real"
    # a symlink below a directory source whose target leaves the context (absolute here) is refused,
    # naming it: the image could not keep it (pull refuses absolute symlinks), and it is never followed
    with pytest.raises(GGUFPackError, match=f"{context / 'dir' / 'etc-link'} is a symlink to '/etc'"):
        _build(tmp_path, gguf_bytes, "COPY dir/ /d/")
    os.unlink(context / "dir" / "etc-link")
    (context / "dir" / "sub").mkdir()
    os.symlink("sub", context / "dir" / "sub-link")
    os.symlink("../real.txt", context / "dir" / "up-link")
    # relative symlinks that stay inside the context are kept as links: their targets are never read
    tree = _build(tmp_path, gguf_bytes, "COPY dir/ /d/")
    assert tree["d/sub-link"] == ("symlink", 0o777, "sub") and tree["d/up-link"] == ("symlink", 0o777, "../real.txt")
    assert not any(isinstance(v[2], bytes) and v[2] in (b"top secret", b"real") for v in tree.values())
    # and nothing is written through a symlink of the image
    with pytest.raises(GGUFPackError, match="symlink"):
        _build(tmp_path, gguf_bytes, "COPY dir/ /d/\nCOPY real.txt /d/sub-link/passwd")


def test_download_names_cannot_escape(tmp_path: Path, gguf_bytes: bytes) -> None:
    with LoopbackHTTPServer() as server:
        server.add_file("/f", b"payload", content_disposition='attachment; filename="../../../evil.bin"')
        tree = _build(tmp_path, gguf_bytes, f"ADD {server.url('/f')} /data/")
    assert tree["data/evil.bin"][2] == b"payload"
    assert [k for k in tree if "evil" in k] == ["data/evil.bin"]


def _tar(*members: tuple[str, str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
                tar.addfile(info)
            else:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("members", [
    [("file", "../evil", b"x")],
    [("file", "a/../../evil", b"x")],
    [("file", "/abs-evil", b"x")],
    [("symlink", "link", "/"), ("file", "link/evil", b"x")],
    [("symlink", "link", "../.."), ("file", "link/evil", b"x")],
    [("dir", "d", b""), ("symlink", "d/up", "../../outside"), ("file", "d/up/evil", b"x")],
    [("hardlink", "hard", "../../outside/evil")],
], ids=["dotdot", "nested-dotdot", "absolute", "abs-symlink-then-file", "rel-symlink-then-file",
        "symlink-in-dir", "hardlink-out"])
def test_hostile_tar_never_writes_outside(tmp_path: Path, members: list) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "root" / "a" / "b"
    dest.mkdir(parents=True)
    blob = tmp_path / "layer.tar"
    blob.write_bytes(_tar(*members))
    with pytest.raises(GGUFPackError):
        extract_layer(blob, dest, "application/vnd.oci.image.layer.v1.tar")
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert all(p == "layer.tar" or p.startswith("root/a/b/") for p in written), written
    assert not any(p.name == "evil" for p in tmp_path.rglob("*") if not str(p).startswith(str(dest)))
    assert not Path("/abs-evil").exists() and not Path("/evil").exists()


def test_prune_removes_scratch_of_dead_builds_only(tmp_path: Path, gguf_bytes: bytes) -> None:
    import fcntl

    store = Store(tmp_path / "home")
    dead = store.layout.ingest / "build-dead"
    (dead / "0.1").mkdir(parents=True)
    (dead / "0.1" / "inline-x").write_bytes(b"partial")
    live = store.layout.ingest / "export-live"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held as a running export holds it
        result = store.prune()
        assert not dead.exists() and live.exists()
        assert result.temps_removed == 1
    finally:
        os.close(fd)
