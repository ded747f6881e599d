"""``ADD <url>``: download one file over HTTP(S), verified, resumable once.

The file lands in ``dest_dir`` under a name chosen by this rule (BuildKit's, with wget's fallback):
the caller's ``filename``; else the ``filename`` of a ``Content-Disposition`` header (its last path
component); else the last component of the URL path as written in the Packerfile (not the redirect
target: a CDN's hashed name would be useless), percent-decoded; else ``index.html``.

Bytes go to a temporary file in ``dest_dir`` that is renamed into place only after the whole body
arrived and the checksum matched, so a failed download leaves nothing behind. The file keeps the
temporary file's ``0600`` mode, as Docker gives downloaded files; ``--chmod`` changes it.
"""

from __future__ import annotations

import email.message
import hashlib
import http.client
import os
import posixpath
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ggufpack import __version__
from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.progress import Bar, Progress

CHECKSUM_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
MAX_REDIRECTS = 10
_CHUNK = 1 << 20
_FALLBACK_NAME = "index.html"


@dataclass(frozen=True)
class DownloadResult:
    """The downloaded file, its SHA-256 hex digest and size, and the URL after redirects."""

    path: Path
    sha256: str
    size: int
    final_url: str


def is_url(src: str) -> bool:
    """Whether an ADD source is an ``http://`` or ``https://`` URL."""
    return src[:8].lower().startswith(("http://", "https://"))


def parse_checksum(text: str) -> tuple[str, str]:
    """Split ``<algo>:<hex>`` (sha256, sha384 or sha512) into the algorithm and lower-case hex."""
    algo, sep, hexdigest = text.strip().partition(":")
    algo = algo.lower()
    known = ", ".join(CHECKSUM_HEX_LENGTHS)
    if not sep:
        raise UsageError(f"bad --checksum {text!r}: write <algorithm>:<hex> with one of {known}")
    if algo not in CHECKSUM_HEX_LENGTHS:
        raise UsageError(f"bad --checksum {text!r}: unknown algorithm {algo!r}; write <algorithm>:<hex> with one of "
                         f"{known}")
    want = CHECKSUM_HEX_LENGTHS[algo]
    if len(hexdigest) != want or not re.fullmatch(r"[0-9a-fA-F]+", hexdigest):
        raise UsageError(f"bad --checksum {text!r}: a {algo} digest is {want} hex digits")
    return algo, hexdigest.lower()


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS


def _open(url: str, timeout: float, headers: dict[str, str]) -> http.client.HTTPResponse:
    """Open ``url`` following redirects; every failure becomes a :class:`GGUFPackError`."""
    opener = urllib.request.build_opener(_RedirectHandler)
    request = urllib.request.Request(url, headers={"User-Agent": f"ggufpack/{__version__}", **headers})
    try:
        return opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if 300 <= exc.code < 400:
            raise GGUFPackError(f"downloading {url} failed: more than {MAX_REDIRECTS} redirects "
                                f"(last at {exc.url}); check the URL") from None
        raise GGUFPackError(f"downloading {url} failed: HTTP {exc.code} {exc.reason} from {exc.url}; "
                            "check the URL and that the file is public") from None
    except urllib.error.URLError as exc:
        raise GGUFPackError(f"cannot download {url}: {exc.reason}; check the address and the network") from None
    except (OSError, http.client.HTTPException) as exc:
        raise GGUFPackError(f"cannot download {url}: {exc}; check the address and the network") from None


def _safe_name(name: str | None) -> str | None:
    """The last path component of ``name`` if it makes a usable file name."""
    if not name:
        return None
    base = posixpath.basename(name.replace("\\", "/").rstrip("/"))
    return base if base not in ("", ".", "..") and "\0" not in base else None


def _filename(url: str, headers: email.message.Message) -> str:
    disposition = headers.get("Content-Disposition")
    if disposition:
        parsed = email.message.Message()
        parsed["Content-Disposition"] = disposition
        name = _safe_name(parsed.get_filename())
        if name:
            return name
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return _safe_name(path) or _FALLBACK_NAME


def _int_header(response: http.client.HTTPResponse, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value and value.strip().isdigit() else None


class _Sink:
    """The temporary file plus running digests."""

    def __init__(self, out: BinaryIO, algorithms: set[str]) -> None:
        self.out = out
        self.algorithms = algorithms
        self.reset()

    def reset(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.hashes = {algo: hashlib.new(algo) for algo in self.algorithms}
        self.size = 0

    def copy(self, response: http.client.HTTPResponse, length: int | None, bar: Bar) -> str | None:
        """Copy the body; return why it stopped short, or ``None`` when it arrived whole."""
        end = None if length is None else self.size + length
        try:
            while chunk := response.read1(_CHUNK):  # read1: keep every byte received before a stall
                self.out.write(chunk)
                for h in self.hashes.values():
                    h.update(chunk)
                self.size += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            return str(exc) or type(exc).__name__
        if end is not None and self.size < end:
            return "the connection closed early"
        return None


def download(
    url: str,
    dest_dir: Path,
    *,
    checksum: str | None,
    progress: Progress,
    filename: str | None = None,
    timeout: float = 60.0,
) -> DownloadResult:
    """Download ``url`` into ``dest_dir`` (see the module notes for the name and the guarantees).

    ``checksum`` is ``<algo>:<hex>`` and is verified before the file appears. ``timeout`` bounds the
    connect and every read, in seconds. When the body is cut short and the server advertised
    ``Accept-Ranges: bytes``, one ``Range`` request continues from the bytes already received.
    """
    if not is_url(url):
        raise UsageError(f"{url!r} is not an http:// or https:// URL")
    expected = parse_checksum(checksum) if checksum else None
    if filename is not None and _safe_name(filename) != filename:
        raise UsageError(f"bad download file name {filename!r}: give a plain file name without '/'")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    algorithms = {"sha256"} | ({expected[0]} if expected else set())
    with _open(url, timeout, {}) as response:
        final_url = response.geturl()
        name = filename or _filename(url, response.headers)
        length = _int_header(response, "Content-Length")
        resumable = response.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
        validator = response.headers.get("ETag", "")
        if not validator or validator.startswith("W/"):  # If-Range needs a strong validator
            validator = response.headers.get("Last-Modified", "")
        fd, tmp = tempfile.mkstemp(prefix=".ggufpack-download-", suffix=".part", dir=dest_dir)
        try:
            with os.fdopen(fd, "w+b") as out, progress.bar(f"downloading {name}", length) as bar:
                sink = _Sink(out, algorithms)
                problem = sink.copy(response, length, bar)
                if problem and resumable:
                    progress.log(f"download of {url} interrupted after {sink.size} bytes ({problem}); resuming")
                    problem = _resume(final_url, sink, validator, timeout, bar)
                if problem:
                    total = "?" if length is None else str(length)
                    raise GGUFPackError(f"download of {url} was interrupted after {sink.size} of {total} bytes "
                                        f"({problem}); try again")
                out.flush()
                os.fsync(out.fileno())
            _verify(url, sink, expected)
            target = dest_dir / name
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return DownloadResult(target, sink.hashes["sha256"].hexdigest(), sink.size, final_url)


def _resume(url: str, sink: _Sink, validator: str, timeout: float, bar: Bar) -> str | None:
    """Ask for the rest of the body once; return why it still failed, or ``None``."""
    headers = {"Range": f"bytes={sink.size}-"}
    if validator:
        headers["If-Range"] = validator
    with _open(url, timeout, headers) as response:
        if response.status == 206:
            match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != sink.size:
                return "the server answered the resume request with the wrong range"
        else:
            # A full body: the file changed (If-Range failed) or the server ignored the range.
            sink.reset()
        return sink.copy(response, _int_header(response, "Content-Length"), bar)


def _verify(url: str, sink: _Sink, expected: tuple[str, str] | None) -> None:
    if expected is None:
        return
    algo, want = expected
    got = sink.hashes[algo].hexdigest()
    if got != want:
        raise GGUFPackError(f"checksum mismatch for {url}: expected {algo}:{want}, got {algo}:{got}; "
                            "the file changed upstream or the --checksum is wrong")
