"""A full disk during ``build``, ``tag``, ``pull`` and ``login``, on a real small filesystem: a 2 MiB
tmpfs mounted by the test (as root; skipped where mounting is not permitted), holding the store, the
build scratch (``TMPDIR``) and the credentials file.

Each command must end in a clear error (``no space left on device while writing PATH``, exit 1, no
traceback) and leave what it was writing as it was: the same ``index.json`` (or ``config.json``) bytes,
no temp file left in ``ingest/``, no ref moved.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers.builds import write_context
from .helpers.ggufmaker import make_gguf
from .helpers.registry import LocalRegistry, registry_available
from .helpers.smallfs import small_tmpfs

REPO = Path(__file__).resolve().parents[1]
SIZE = "2m"
PACKERFILE = 'FROM scratch\nCOPY tiny.gguf /m.gguf\nCMD ["-m", "/m.gguf"]\n'


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted at the end whatever happens."""
    with small_tmpfs(tmp_path / "small", SIZE) as mount:
        (mount / "tmp").mkdir()
        yield mount


def ggufpack(home: Path, small: Path, *args: str, stdin: str | None = None,
             **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    environment.update({"GGUFPACK_HOME": str(home), "TMPDIR": str(small / "tmp"), "PYTHONPATH": str(REPO), **env})
    return subprocess.run([sys.executable, "-m", "ggufpack", *args], capture_output=True, text=True, timeout=300,
                          env=environment, cwd=REPO, input=stdin)


def fill(directory: Path) -> None:
    """Write a file in ``directory`` until its filesystem has no page left."""
    block = b"\0" * 4096
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return
    finally:
        os.close(fd)


def temp_files(home: Path) -> list[str]:
    """What a write in progress leaves: anything in ``ingest/``, any ``*.tmp`` in the store."""
    ingest = [p.name for p in (home / "ingest").iterdir()]
    return sorted(ingest + [str(p.relative_to(home)) for p in home.rglob("*.tmp")])


def assert_disk_full(result: subprocess.CompletedProcess[str], written: Path) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    # a build's error carries the Packerfile position of the instruction it happened in
    assert re.search(r"error: (\S+:\d+:\d+: )?no space left on device while writing ", result.stderr), \
        result.stderr[-3000:]
    assert str(written) in result.stderr, result.stderr[-3000:]


def tiny_context(directory: Path, **files: bytes) -> Path:
    (directory / "model").mkdir(exist_ok=True)
    model = make_gguf(directory / "model" / "tiny.gguf")
    packerfile = PACKERFILE + "".join(f"COPY {name} /{name}\n" for name in files)
    return write_context(directory / "ctx", packerfile, {"tiny.gguf": model.read_bytes(), **files})


def built_store(tmp_path: Path, small: Path) -> Path:
    """A store on the small filesystem holding ``x:1``."""
    home = small / "home"
    built = ggufpack(home, small, "build", "-t", "x:1", "--progress", "plain", str(tiny_context(tmp_path)))
    assert built.returncode == 0, built.stderr
    return home


def test_item10_enospc_build(tmp_path: Path, small_fs: Path) -> None:
    home = small_fs / "home"
    assert ggufpack(home, small_fs, "list").returncode == 0  # the store exists, empty
    before = (home / "index.json").read_bytes()
    context = tiny_context(tmp_path, **{"big.bin": os.urandom(3 << 20)})  # more than the filesystem holds
    result = ggufpack(home, small_fs, "build", "-t", "big:1", "--progress", "plain", str(context))
    assert_disk_full(result, home)
    assert "GGUFPackerfile:4:1: no space left on device" in result.stderr  # the COPY of big.bin
    assert (home / "index.json").read_bytes() == before
    assert temp_files(home) == []
    assert not list((small_fs / "tmp").iterdir())  # nor in the build scratch


def test_item10_enospc_tag(tmp_path: Path, small_fs: Path) -> None:
    home = built_store(tmp_path, small_fs)
    before = (home / "index.json").read_bytes()
    fill(small_fs)
    assert_disk_full(ggufpack(home, small_fs, "tag", "x:1", "y:1"), home / "index.json")
    assert_disk_full(ggufpack(home, small_fs, "remove", "x:1"), home / "index.json")
    assert (home / "index.json").read_bytes() == before
    assert temp_files(home) == []
    (small_fs / "filler").unlink()
    assert ggufpack(home, small_fs, "tag", "x:1", "y:1").returncode == 0  # with space again, it works


def test_item10_enospc_login(tmp_path: Path, small_fs: Path) -> None:
    if not registry_available():
        pytest.skip("docker-registry, htpasswd or openssl is not installed")
    config_dir = small_fs / "docker"
    config_dir.mkdir()
    config = config_dir / "config.json"
    config.write_text('{"auths": {}}\n')
    fill(small_fs)
    with LocalRegistry(tmp_path / "registry", auth=("alice", "s3cret")) as registry:
        result = ggufpack(small_fs / "home-unused", tmp_path, "login", registry.host, "-u", "alice",
                          "--password-stdin", "--plain-http", stdin="s3cret\n", DOCKER_CONFIG=str(config_dir))
    assert_disk_full(result, config)
    assert config.read_text() == '{"auths": {}}\n'
    assert sorted(p.name for p in config_dir.iterdir()) == ["config.json"]


def test_item10_enospc_pull(tmp_path: Path, small_fs: Path) -> None:
    if not registry_available():
        pytest.skip("docker-registry, htpasswd or openssl is not installed")
    source = tmp_path / "source-home"
    built = ggufpack(source, small_fs, "build", "-t", "x:1", "--progress", "plain", str(tiny_context(tmp_path)),
                     TMPDIR=str(tmp_path))
    assert built.returncode == 0, built.stderr
    home = small_fs / "home"
    assert ggufpack(home, small_fs, "list").returncode == 0
    before = (home / "index.json").read_bytes()
    with LocalRegistry(tmp_path / "registry") as registry:
        ref = f"{registry.host}/enospc/x:1"
        pushed = ggufpack(source, tmp_path, "push", "x:1", ref, "--plain-http", "-q")
        assert pushed.returncode == 0, pushed.stderr
        fill(small_fs)
        result = ggufpack(home, small_fs, "pull", ref, "--plain-http", "-q")
    assert_disk_full(result, home)
    assert (home / "index.json").read_bytes() == before
    assert temp_files(home) == []  # (a partial download under state/downloads is a resume point, by design)


# ---------------------------------------------------------------- the write primitives themselves


def test_item10_enospc_ingest_writer_drops_its_temp_and_stays_failed(small_fs: Path) -> None:
    """A layer is tar (and gzip) written into an :class:`IngestWriter`: on a full disk the temp goes at
    once, and the trailer gzip writes while the error unwinds meets the same error, not a ValueError."""
    import gzip

    from ggufpack.errors import DiskFullError
    from ggufpack.store import Store

    store = Store(small_fs / "home")
    with pytest.raises(DiskFullError, match="no space left on device while writing") as info, \
            store.blob_writer() as writer, gzip.GzipFile(fileobj=writer, mode="wb", mtime=0) as packed:
        for _ in range(64):
            packed.write(os.urandom(64 << 10))
    assert str(store.layout.blobs) in str(info.value)
    assert list(store.layout.ingest.iterdir()) == [] and list(store.layout.blobs.iterdir()) == []
    with pytest.raises(DiskFullError):
        store.put_bytes(os.urandom(3 << 20))
    assert list(store.layout.ingest.iterdir()) == []


def test_item10_enospc_atomic_write_keeps_the_old_file(small_fs: Path) -> None:
    from ggufpack.errors import DiskFullError
    from ggufpack.util.fsutil import atomic_write

    target = small_fs / "settings.json"
    target.write_text("old")
    with pytest.raises(DiskFullError, match=f"while writing {target}"):
        atomic_write(target, os.urandom(3 << 20), small_fs, mode=0o600)
    assert target.read_text() == "old"
    assert sorted(p.name for p in small_fs.iterdir()) == ["settings.json", "tmp"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_item10_any_other_full_disk_is_a_clear_error_as_a_last_resort(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      code: int) -> None:
    """A writer outside the store (a converter's output, say) that lets ENOSPC out: still no traceback."""
    from ggufpack import cli

    def full(_args: object) -> int:
        raise OSError(code, os.strerror(code), "/somewhere/out.gguf")

    monkeypatch.setattr(cli, "cmd_plan", full)
    assert cli.main(["plan", "."]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "while writing /somewhere/out.gguf" in err and "Traceback" not in err
    assert ("no space left on device" if code == errno.ENOSPC else "disk quota exceeded") in err
