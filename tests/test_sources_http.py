"""ADD <url>: downloads from a real loopback HTTP server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.progress import Progress
from ggufpack.sources.http import DownloadResult, download, is_url, parse_checksum
from tests.helpers.httpserver import LoopbackHTTPServer

DATA = bytes(range(256)) * 4096  # 1 MiB
SHA256 = hashlib.sha256(DATA).hexdigest()
QUIET = Progress("quiet")


@pytest.fixture
def server() -> Iterator[LoopbackHTTPServer]:
    with LoopbackHTTPServer() as s:
        yield s


def fetch(url: str, dest: Path, checksum: str | None = None, **kwargs: object) -> DownloadResult:
    return download(url, dest, checksum=checksum, progress=QUIET, timeout=5, **kwargs)  # type: ignore[arg-type]


def test_download_with_checksums(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/models/tiny.gguf", DATA)
    for algo in ("sha256", "sha384", "sha512"):
        dest = tmp_path / algo
        result = fetch(server.url("/models/tiny.gguf"), dest, f"{algo}:{hashlib.new(algo, DATA).hexdigest()}")
        assert result.path == dest / "tiny.gguf" and result.path.read_bytes() == DATA
        assert (result.sha256, result.size) == (SHA256, len(DATA))
        assert [p.name for p in dest.iterdir()] == ["tiny.gguf"]


def test_checksum_mismatch_leaves_nothing(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/m.gguf", DATA)
    wrong = "0" * 64
    with pytest.raises(GGUFPackError, match=f"expected sha256:{wrong}, got sha256:{SHA256}"):
        fetch(server.url("/m.gguf"), tmp_path, f"sha256:{wrong}")
    assert list(tmp_path.iterdir()) == []


def test_redirect_and_final_url(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/cdn/3f2a9c", DATA)
    server.add_redirect("/resolve/main/model.gguf", "/hop")
    server.add_redirect("/hop", server.url("/cdn/3f2a9c"), status=307)
    result = fetch(server.url("/resolve/main/model.gguf"), tmp_path)
    assert result.final_url == server.url("/cdn/3f2a9c")
    assert result.path.name == "model.gguf"  # named after the URL as written, not the CDN's path


def test_redirect_loop_is_capped(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_redirect("/loop", "/loop")
    with pytest.raises(GGUFPackError, match="the redirects go round in a loop"):
        fetch(server.url("/loop"), tmp_path)


def test_file_name_rules(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/dl", b"a", content_disposition='attachment; filename="../evil/weights.gguf"')
    server.add_file("/dl2", b"b", content_disposition="attachment; filename*=UTF-8''mod%C3%A8le.gguf")
    server.add_file("/", b"c")
    server.add_file("/dir/my%20model.gguf", b"d")
    assert fetch(server.url("/dl"), tmp_path / "1").path.name == "weights.gguf"
    assert fetch(server.url("/dl2"), tmp_path / "2").path.name == "modèle.gguf"
    assert fetch(server.url("/"), tmp_path / "3").path.name == "index.html"
    assert fetch(server.url("/dir/my%20model.gguf"), tmp_path / "4").path.name == "my model.gguf"
    assert fetch(server.url("/dl"), tmp_path / "5", filename="chosen.gguf").path.name == "chosen.gguf"
    with pytest.raises(UsageError, match="plain file name"):
        fetch(server.url("/dl"), tmp_path / "6", filename="a/b")


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors(server: LoopbackHTTPServer, tmp_path: Path, status: int) -> None:
    server.add_status("/gone", status)
    with pytest.raises(GGUFPackError, match=rf"HTTP {status} .* from {server.url('/gone')}"):
        fetch(server.url("/gone"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused(tmp_path: Path) -> None:
    with LoopbackHTTPServer() as stopped:
        url = stopped.url("/x")
    with pytest.raises(GGUFPackError, match="cannot download"):
        fetch(url, tmp_path)


def test_cut_then_resume_fetches_only_the_rest(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/m.gguf", DATA, cut_after=300_000, etag='"v1"')
    result = fetch(server.url("/m.gguf"), tmp_path, f"sha256:{SHA256}")
    assert result.path.read_bytes() == DATA and result.sha256 == SHA256
    first, second = server.requests
    assert first.range is None
    assert second.range == "bytes=300000-" and second.headers.get("If-Range") == '"v1"'
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


def test_read_timeout_then_resume(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/m.gguf", DATA, cut_after=5000, stall=1.0)
    result = download(server.url("/m.gguf"), tmp_path, checksum=None, progress=QUIET, timeout=0.2)
    assert result.sha256 == SHA256
    assert [r.range for r in server.requests] == [None, "bytes=5000-"]


def test_resume_restarts_when_file_changed(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    route = server.add_file("/m.gguf", DATA, cut_after=1000, etag='"v1"')
    route.etag = '"v2"'  # If-Range no longer matches: the server sends the whole (new) body
    result = fetch(server.url("/m.gguf"), tmp_path)
    assert result.sha256 == SHA256 and result.size == len(DATA)


def test_cut_twice_fails(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/m.gguf", DATA, cut_after=1000, cut_times=2)
    with pytest.raises(GGUFPackError, match="was interrupted after 2000 of 1048576 bytes"):
        fetch(server.url("/m.gguf"), tmp_path)
    assert len(server.requests) == 2
    assert list(tmp_path.iterdir()) == []


def test_cut_without_range_support_fails(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/m.gguf", DATA, cut_after=1000, ranges=False)
    with pytest.raises(GGUFPackError, match="interrupted after 1000 of 1048576 bytes"):
        fetch(server.url("/m.gguf"), tmp_path)
    assert len(server.requests) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [("sha256:" + "A" * 64, ("sha256", "a" * 64)), ("SHA512:" + "0" * 128, ("sha512", "0" * 128)),
     ("sha384:" + "f" * 96, ("sha384", "f" * 96))],
)
def test_parse_checksum(text: str, expected: tuple[str, str]) -> None:
    assert parse_checksum(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("md5:" + "0" * 32, "unknown algorithm 'md5'"), ("sha256:abc", "64 hex digits"),
     ("sha256:" + "g" * 64, "64 hex digits"), ("0" * 64, "write <algorithm>:<hex>")],
)
def test_parse_checksum_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_checksum(text)


def test_bad_checksum_is_rejected_before_any_request(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/m", b"x")
    with pytest.raises(UsageError):
        fetch(server.url("/m"), tmp_path, "sha1:" + "0" * 40)
    assert server.requests == []


def test_is_url() -> None:
    assert is_url("https://huggingface.co/x") and is_url("HTTP://a/b")
    assert not is_url("model.gguf") and not is_url("git@github.com:a/b.git")
