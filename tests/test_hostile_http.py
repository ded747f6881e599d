"""Hostile HTTP sources: servers that redirect anywhere, lie about lengths and choose file names.

Every case runs in a forked child under an address-space cap and a deadline
(:mod:`tests.helpers.bounded`) against a real loopback server; only our own errors may come out,
and the download lands in its destination directory or nowhere.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.progress import Progress
from ggufpack.sources.http import MAX_REDIRECTS, download
from tests.helpers.bounded import Outcome, assert_clean, assert_refused, run_bounded
from tests.helpers.httpserver import LoopbackHTTPServer

QUIET = Progress("quiet")
DATA = b"model bytes\n" * 100
_paths = itertools.count()


@pytest.fixture
def server() -> Iterator[LoopbackHTTPServer]:
    with LoopbackHTTPServer() as s:
        yield s


def fetch(url: str, dest: Path, checksum: str | None = None) -> tuple[str, bytes]:
    """Download in the bounded child; return the file's path relative to ``dest`` and its bytes."""
    result = download(url, dest, checksum=checksum, progress=QUIET, timeout=5)
    return str(result.path.relative_to(dest)), result.path.read_bytes()


def bounded_fetch(url: str, dest: Path, checksum: str | None = None) -> Outcome:
    return assert_clean(run_bounded(fetch, url, dest, checksum, budget_mb=256, seconds=60))


def only_file(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


class Listener:
    """A TCP port that records whether anyone connected (the target of a redirect we must not follow)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connected(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


# -- found: item 13 (a redirect to ftp://) and its redirect siblings -----------------------------------


def test_item13_http_redirect_to_ftp_refused(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    ftp = Listener()
    try:
        server.add_redirect("/m.bin", f"ftp://127.0.0.1:{ftp.port}/m.bin")
        outcome = bounded_fetch(server.url("/m.bin"), tmp_path / "d")
        assert_refused(outcome, f"redirected to ftp://127.0.0.1:{ftp.port}/m.bin", "only to http:// and https://")
        assert not ftp.connected()  # refused before any connection
    finally:
        ftp.close()
    assert only_file(tmp_path / "d") == []


@pytest.mark.parametrize("location", ["file:///etc/passwd", "data:,hello", "javascript:alert(1)", "gopher://x/"])
def test_item13_http_redirect_to_other_schemes_refused_clearly(
    server: LoopbackHTTPServer, tmp_path: Path, location: str,
) -> None:
    server.add_redirect("/m.bin", location)
    outcome = bounded_fetch(server.url("/m.bin"), tmp_path / "d")
    assert_refused(outcome, "redirected to", "only to http:// and https://")
    assert "more than" not in outcome.message  # not reported as too many redirects
    assert only_file(tmp_path / "d") == []


def test_item13_http_redirect_loop_is_named_a_loop(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_redirect("/a", "/b")
    server.add_redirect("/b", server.url("/a"))
    outcome = bounded_fetch(server.url("/a"), tmp_path / "d")
    assert_refused(outcome, "loop", "/a -> ", "/b -> ")
    assert len(server.requests) == 2  # each URL asked once, not until a counter runs out


def test_item13_http_long_redirect_chain_stops(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    for i in range(MAX_REDIRECTS + 5):
        server.add_redirect(f"/r{i}", f"/r{i + 1}")
    assert_refused(bounded_fetch(server.url("/r0"), tmp_path / "d"), f"more than {MAX_REDIRECTS} redirects")
    assert len(server.requests) == MAX_REDIRECTS + 1


@pytest.mark.parametrize("location", ["http://[::1", "http://127.0.0.1:99999/x", "http://127.0.0.1:port/", "http://:80/"])
def test_item13_http_bad_location_is_our_error(server: LoopbackHTTPServer, tmp_path: Path, location: str) -> None:
    server.add_redirect("/m.bin", location)
    assert_refused(bounded_fetch(server.url("/m.bin"), tmp_path / "d"), "redirected to")


def test_item13_http_redirect_without_location(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_raw("/m.bin", 302, [("Content-Length", "0")])
    assert_refused(bounded_fetch(server.url("/m.bin"), tmp_path / "d"), "redirect but no Location")


def test_item13_http_redirect_with_non_ascii_location(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    """A Location's raw bytes (here UTF-8 'é') are sent back percent-encoded, byte for byte."""
    server.add_raw("/m.bin", 302, [("Location", "/mod\u00c3\u00a9le.bin"), ("Content-Length", "0")])
    server.add_file("/mod%C3%A9le.bin", DATA)
    outcome = bounded_fetch(server.url("/m.bin"), tmp_path / "d")
    assert outcome.kind == "ok", str(outcome)
    assert outcome.value == ("m.bin", DATA)  # named for the URL as written


# -- found: item 13 (lengths, checksums, names) --------------------------------------------------------


@pytest.mark.parametrize("length", ["\u00b2", pytest.param("9" * 5000, id="5000-digits"), "1" + "0" * 40, "-1", "abc",
                                    "12, 12", ""])
def test_item13_http_odd_content_length_is_handled(server: LoopbackHTTPServer, tmp_path: Path, length: str) -> None:
    """'²'.isdigit() is true and 5000 digits are too many for int(): neither may crash the download."""
    server.add_raw("/m.bin", 200, [("Content-Length", length)], DATA)
    outcome = bounded_fetch(server.url("/m.bin"), tmp_path / "d")
    if outcome.kind == "ok":
        assert outcome.value[0] == "m.bin"
    else:
        assert "interrupted" in outcome.message


def test_item13_http_more_bytes_than_content_length_are_not_taken(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_raw("/m.bin", 200, [("Content-Length", "10")], DATA)
    assert bounded_fetch(server.url("/m.bin"), tmp_path / "d").value == ("m.bin", DATA[:10])
    sha = hashlib.sha256(DATA).hexdigest()
    assert_refused(bounded_fetch(server.url("/m.bin"), tmp_path / "e", f"sha256:{sha}"), "checksum mismatch")
    assert only_file(tmp_path / "e") == []


def test_item13_http_fewer_bytes_than_content_length_fail(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_raw("/m.bin", 200, [("Content-Length", str(10**15))], DATA)
    assert_refused(bounded_fetch(server.url("/m.bin"), tmp_path / "d"), "interrupted", "connection closed early")
    assert only_file(tmp_path / "d") == []


def test_item13_http_bad_checksum_leaves_nothing(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/m.bin", DATA)
    assert_refused(bounded_fetch(server.url("/m.bin"), tmp_path / "d", "sha256:" + "0" * 64), "checksum mismatch")
    assert only_file(tmp_path / "d") == []


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ('attachment; filename="../../x"', "x"),
        ('attachment; filename="/etc/passwd"', "passwd"),
        ('attachment; filename="..\\\\..\\\\evil.bin"', "evil.bin"),
        ("attachment; filename*=UTF-8''..%2F..%2Fescaped", "escaped"),
        ('attachment; filename=".."', "m.bin"),
        ('attachment; filename="/"', "m.bin"),
        # names that would not be safe to print or to store: the URL's name is used instead
        ("attachment; filename*=UTF-8''%1B%5B2J%1B%5B31mred", "m.bin"),
        ("attachment; filename*=UTF-8''two%0Alines", "m.bin"),
        ("attachment; filename*=UTF-8''nul%00byte", "m.bin"),
        pytest.param("attachment; filename=" + "n" * 300, "m.bin", id="300-byte-name"),
        ("attachment; filename*=bogus-charset''x.bin", "x.bin"),
    ],
)
def test_item13_http_hostile_content_disposition_stays_in_dest(
    server: LoopbackHTTPServer, tmp_path: Path, disposition: str, name: str,
) -> None:
    server.add_file("/m.bin", DATA, content_disposition=disposition)
    dest = tmp_path / "deep" / "d"
    outcome = bounded_fetch(server.url("/m.bin"), dest)
    assert outcome.kind == "ok", str(outcome)
    assert outcome.value == (name, DATA)
    assert only_file(dest) == [name] and sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


@pytest.mark.parametrize(
    ("path", "name"),
    [("/mod%C3%A8le.bin", "modèle.bin"), ("/%FF%FE.bin", "\ufffd\ufffd.bin"), ("/%1B%5B31m.bin", "index.html"),
     ("/a%2F..%2F..%2Fb", "b"), ("/dir/", "dir")],
)
def test_item13_http_names_from_odd_url_paths(server: LoopbackHTTPServer, tmp_path: Path, path: str, name: str) -> None:
    server.add_file(path, DATA)
    assert bounded_fetch(server.url(path), tmp_path / "d").value == (name, DATA)


def test_item13_http_non_ascii_url_is_sent_encoded(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/mod%C3%A8le%20v2.bin", DATA)
    assert bounded_fetch(server.url("/modèle v2.bin"), tmp_path / "d").value == ("modèle v2.bin", DATA)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x", "http://[::1/x", "http:///x", "http://127.0.0.1:1/\udcff"])
def test_item13_http_bad_user_url_is_a_usage_error(tmp_path: Path, url: str) -> None:
    outcome = bounded_fetch(url, tmp_path / "d")
    assert_refused(outcome, "bad URL")
    assert outcome.type_name == "UsageError"


# -- siblings ------------------------------------------------------------------------------------------


def test_folded_etag_in_a_cut_download_fails_cleanly(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    """A folded ETag goes back as If-Range as it came (http.client allows the fold); the resume fails cleanly."""
    server.add_raw("/m.bin", 200, [("Content-Length", str(len(DATA) * 2)), ("Accept-Ranges", "bytes"),
                                   ("ETag", '"a"\r\n\tX-Injected: 1')], DATA)
    assert_refused(bounded_fetch(server.url("/m.bin"), tmp_path / "d"), "interrupted")


def test_sibling_http_local_write_failure_is_our_error(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_file("/m.bin", DATA)
    (tmp_path / "file").write_bytes(b"")
    assert_refused(bounded_fetch(server.url("/m.bin"), tmp_path / "file" / "d"), "cannot save the download")


def test_sibling_http_server_text_in_messages_is_escaped(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    server.add_redirect("/r", "/\x1b[2J" + "x" * 5000)
    outcome = bounded_fetch(server.url("/r"), tmp_path / "d")
    assert_refused(outcome, "HTTP 404")
    assert "\x1b" not in outcome.message and len(outcome.message) < 1000


# -- property-based: random redirect chains, random headers ---------------------------------------------

STATUSES = st.sampled_from([301, 302, 303, 307, 308, 300, 304, 305, 200, 204, 206, 404, 500])
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40)


def _location(kind: str, target: int, text: str, port: int, prefix: str) -> str:
    return {
        "relative": f"{prefix}{target}",
        "absolute": f"http://127.0.0.1:{port}{prefix}{target}",
        "scheme-relative": f"//127.0.0.1:{port}{prefix}{target}",
        "upper": f"HTTP://127.0.0.1:{port}{prefix}{target}",
        "https": f"https://127.0.0.1:{port}{prefix}{target}",
        "ftp": f"ftp://127.0.0.1:{port}/x",
        "file": "file:///etc/passwd",
        "data": "data:,x",
        "text": "x" + text,  # a relative path of odd characters (never '//host': no DNS in tests)
        "bad-port": "http://127.0.0.1:70000/",
        "bad-ipv6": "http://[::1/",
        "empty": "",
    }[kind]


LOCATION_KINDS = st.sampled_from(["relative", "absolute", "scheme-relative", "upper", "https", "ftp", "file", "data",
                                  "text", "bad-port", "bad-ipv6", "empty"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hops=st.lists(st.tuples(STATUSES, LOCATION_KINDS, st.integers(0, 6), HEADER_TEXT), min_size=1, max_size=6))
def test_random_redirect_chains(hops: list[tuple[int, str, int, str]]) -> None:
    with LoopbackHTTPServer() as server, tempfile.TemporaryDirectory(prefix="hostile-http-") as scratch:
        prefix = f"/c{next(_paths)}/"
        for i, (status, kind, target, text) in enumerate(hops):
            location = _location(kind, target, text, server.port, prefix)
            server.add_raw(f"{prefix}{i}", status, [("Location", location), ("Content-Length", "0")])
        server.add_file(f"{prefix}{len(hops)}", DATA)
        dest = Path(scratch) / "d"
        outcome = bounded_fetch(server.url(f"{prefix}0"), dest)
        assert len(server.requests) <= MAX_REDIRECTS + 1
        if outcome.kind == "ok":
            name, got = outcome.value
            assert only_file(dest) == [name] and "/" not in name and got in (DATA, b"")
        else:
            assert only_file(dest) == []
        assert sorted(p.name for p in Path(scratch).iterdir()) in ([], ["d"])


HEADER_NAMES = st.sampled_from(["Content-Length", "Content-Disposition", "Accept-Ranges", "ETag", "Last-Modified",
                                "Content-Range", "Transfer-Encoding", "Content-Encoding", "Location"])
DISPOSITIONS = st.sampled_from(["attachment; filename=", "attachment; filename*=UTF-8''", 'inline; filename="',
                                "attachment; filename*0*=UTF-8''", ""])
PIECES = st.sampled_from(["..", "/", "\\", "%2F", "%2E%2E", "%00", "%1B", "%0A", "x", "é", ".bin", "/etc/passwd",
                          "\u00ff", "%FF", "'", '"', ";", " ", "n" * 100])
NUMBERS = st.sampled_from(["0", "1", "5", "1200", "1201", str(10**15), "\u00b2", "-3", "9" * 5000, "abc", "1, 1"])


@st.composite
def header_values(draw: st.DrawFn, name: str) -> str:
    if name in ("Content-Length",):
        return draw(NUMBERS)
    if name == "Content-Disposition":
        return draw(DISPOSITIONS) + "".join(draw(st.lists(PIECES, max_size=6)))
    if name == "Content-Range":
        return f"bytes {draw(NUMBERS)}-{draw(NUMBERS)}/{draw(NUMBERS)}"
    value = draw(st.one_of(HEADER_TEXT, st.sampled_from(["bytes", "chunked", "gzip", '"e"', "W/\"e\""])))
    return value + draw(st.sampled_from(["", "\r\n\tfolded", "\r\n continued"]))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), status=st.sampled_from([200, 200, 200, 203, 204, 206]), body=st.binary(max_size=2000),
       names=st.lists(HEADER_NAMES, max_size=6), checksum=st.booleans())
def test_random_response_headers(
    data: st.DataObject, status: int, body: bytes, names: list[str], checksum: bool,
) -> None:
    headers = [(name, data.draw(header_values(name), label=name)) for name in names]
    with LoopbackHTTPServer() as server, tempfile.TemporaryDirectory(prefix="hostile-http-") as scratch:
        path = f"/h{next(_paths)}/m.bin"
        server.add_raw(path, status, headers, body)
        dest = Path(scratch) / "deep" / "d"
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}" if checksum else None
        outcome = bounded_fetch(server.url(path), dest, digest)
        if outcome.kind == "ok":
            name, got = outcome.value
            assert only_file(dest) == [name] and name.isprintable() and "/" not in name
            assert len(name.encode()) <= 255
            if checksum:
                assert got == body
        else:
            assert only_file(dest) == []
        assert os.listdir(scratch) == ["deep"] and os.listdir(Path(scratch) / "deep") in ([], ["d"])
