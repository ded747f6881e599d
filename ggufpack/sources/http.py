"""``ADD <url>``: download one file over HTTP(S), verified, resumable once.

The file lands in ``dest_dir`` under a name chosen by this rule (BuildKit's, with wget's fallback):
the caller's ``filename``; else the ``filename`` of a ``Content-Disposition`` header (its last path
component); else the last component of the URL path as written in the Packerfile (not the redirect
target: a CDN's hashed name would be useless), percent-decoded; else ``index.html``.

Bytes go to a temporary file in ``dest_dir`` that is renamed into place only after the whole body
arrived and the checksum matched, so a failed download leaves nothing behind. The file keeps the
temporary file's ``0600`` mode, as Docker gives downloaded files; ``--chmod`` changes it.

The server is untrusted input. Redirects are followed here, not by urllib, so that each target is
checked: only ``http://`` and ``https://`` (never ``ftp://``, ``file://``, ``data:``), at most
``MAX_REDIRECTS``, no loops. A name taken from a header or a URL is one printable path component
that fits a file name, or it is not used; numbers in headers are ASCII digits; text from the server
appears in messages escaped and shortened.
"""

from __future__ import annotations

import contextlib
import email.message
import hashlib
import http.client
import os
import posixpath
import re
import string
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ggufpack.errors import NO_SPACE_ERRNOS, DiskFullError, GGUFPackError, UsageError, printable
from ggufpack.options.checksum import parse_checksum
from ggufpack.progress import Bar, Progress
from ggufpack.version import __version__

MAX_REDIRECTS = 10
_CHUNK = 1 << 20
_FALLBACK_NAME = "index.html"
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_MAX_NAME_BYTES = 255  # NAME_MAX of Linux filesystems
_SHOWN = 200  # characters of server-chosen text quoted in a message
_NUMBER = r"[0-9]{1,4000}"  # ASCII only ('²'.isdigit() is true), and short enough for int()


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


def _shown(text: object) -> str:
    """Server-chosen text fit for a message: controls shown visibly, at most ``_SHOWN`` characters."""
    return printable(str(text), _SHOWN)


def _quoted(url: str, encoding: str) -> str:
    """``url`` with spaces, control and non-ASCII characters percent-encoded (what goes on the wire).

    A Packerfile URL is UTF-8 text; a ``Location`` header arrives as ISO-8859-1 (as urllib reads it),
    so its raw bytes come back unchanged. ASCII punctuation, ``%`` included, is kept as written.
    """
    return urllib.parse.quote(url, safe=string.punctuation, encoding=encoding)


def _url_problem(url: str) -> str | None:
    """Why ``url`` is not an ``http(s)`` URL that can be fetched, or ``None``."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        return f"it is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"its scheme {parts.scheme + ':' if parts.scheme else '(none)'} is not http:// or https://"
    if not parts.hostname:
        return "it names no host"
    return None


def _opener() -> urllib.request.OpenerDirector:
    """http(s) only, and no redirect handler: :func:`_open` follows redirects after checking them."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                    urllib.request.UnknownHandler()):
        opener.add_handler(handler)
    return opener


def _open(url: str, timeout: float, headers: dict[str, str]) -> http.client.HTTPResponse:
    """Open ``url`` (already checked) following redirects; every failure becomes a :class:`GGUFPackError`."""
    opener = _opener()
    chain = [url]
    while True:
        current = chain[-1]
        request = urllib.request.Request(current, headers={"User-Agent": f"ggufpack/{__version__}", **headers})
        try:
            return opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            location = exc.headers.get("Location") if exc.headers is not None else None
            exc.close()
            if exc.code not in _REDIRECT_CODES:
                raise GGUFPackError(f"downloading {url} failed: HTTP {exc.code} {_shown(exc.reason)} from "
                                    f"{_shown(current)}; check the URL and that the file is public") from None
        except urllib.error.URLError as exc:
            raise GGUFPackError(f"cannot download {url}: {_shown(exc.reason)}; check the address and the "
                                "network") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # ValueError: http.client refusing a URL or header value it will not put on the wire
            raise GGUFPackError(f"cannot download {url}: {_shown(exc)}; check the address and the network") from None
        chain.append(_redirect_target(url, current, location))
        if chain[-1] in chain[:-1]:
            loop = " -> ".join(_shown(u) for u in chain[chain.index(chain[-1]):])
            raise GGUFPackError(f"downloading {url} failed: the redirects go round in a loop ({loop}); "
                                "check the URL")
        if len(chain) > MAX_REDIRECTS + 1:
            raise GGUFPackError(f"downloading {url} failed: more than {MAX_REDIRECTS} redirects "
                                f"(last at {_shown(current)}); check the URL")


def _redirect_target(url: str, current: str, location: str | None) -> str:
    """The absolute URL a redirect from ``current`` leads to, refused unless it is http(s)."""
    if not location or not location.strip():
        raise GGUFPackError(f"downloading {url} failed: {_shown(current)} answered with a redirect but no "
                            "Location; check the URL")
    target = _quoted(location.strip(), "iso-8859-1")
    with contextlib.suppress(ValueError):  # a malformed target: _url_problem says what is wrong with it
        target = urllib.parse.urljoin(current, target)
    problem = _url_problem(target)
    if problem:
        raise GGUFPackError(f"downloading {url} failed: {_shown(current)} redirected to {_shown(target)}, and "
                            f"{problem}; ggufpack follows redirects only to http:// and https:// URLs")
    return target


def _safe_name(name: str | None) -> str | None:
    """The last path component of ``name`` if it makes a usable file name.

    Usable: not empty, ``.`` or ``..``; printable (no NUL, newline, terminal escape or lone
    surrogate); at most 255 bytes. A name from a header or a URL that is not is replaced by the next
    rule's, never shortened or repaired, so a file never lands under a name the server half-chose.
    """
    if not name:
        return None
    base = posixpath.basename(name.replace("\\", "/").rstrip("/"))
    if base in ("", ".", "..") or not base.isprintable():
        return None
    return base if len(base.encode("utf-8")) <= _MAX_NAME_BYTES else None


def _disposition_name(disposition: str) -> str | None:
    """The ``filename`` parameter of a ``Content-Disposition`` value, or ``None`` if it has none."""
    parsed = email.message.Message()
    try:
        parsed["Content-Disposition"] = disposition
        return parsed.get_filename()
    except (ValueError, LookupError):  # an unknown charset or a malformed RFC 2231 parameter
        return None


def _filename(url: str, headers: email.message.Message) -> str:
    disposition = headers.get("Content-Disposition")
    name = _safe_name(_disposition_name(disposition)) if disposition else None
    if name:
        return name
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return _safe_name(path) or _FALLBACK_NAME


def _int_header(response: http.client.HTTPResponse, name: str) -> int | None:
    value = (response.headers.get(name) or "").strip()
    return int(value) if re.fullmatch(_NUMBER, value) else None


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
        """Copy the body; return why it stopped short, or ``None`` when it arrived whole.

        Only reading can stop short; a failed write (a full disk) raises ``OSError`` to the caller.
        """
        end = None if length is None else self.size + length
        while True:
            try:
                chunk = response.read1(_CHUNK)  # read1: keep every byte received before a stall
            except (OSError, http.client.HTTPException, ValueError) as exc:
                return _shown(str(exc) or type(exc).__name__)
            if not chunk:
                break
            self.out.write(chunk)
            for h in self.hashes.values():
                h.update(chunk)
            self.size += len(chunk)
            bar.update(len(chunk))
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
    try:
        wire_url = _quoted(url, "utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"bad URL {url!r}: it holds characters that are not valid text") from None
    problem = _url_problem(wire_url)
    if problem:
        raise UsageError(f"bad URL {url!r}: {problem}")
    expected = parse_checksum(checksum) if checksum else None
    if filename is not None and _safe_name(filename) != filename:
        raise UsageError(f"bad download file name {filename!r}: give a plain file name without '/'")
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(url, dest_dir, exc) from None
    algorithms = {"sha256"} | ({expected[0]} if expected else set())
    with _open(wire_url, timeout, {}) as response:
        final_url = response.geturl()
        name = filename or _filename(url, response.headers)
        length = _int_header(response, "Content-Length")
        resumable = response.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
        validator = response.headers.get("ETag", "")
        if not validator or validator.startswith("W/"):  # If-Range needs a strong validator
            validator = response.headers.get("Last-Modified", "")
        try:
            fd, tmp = tempfile.mkstemp(prefix=".ggufpack-download-", suffix=".part", dir=dest_dir)
        except OSError as exc:
            raise _write_error(url, dest_dir, exc) from None
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
            target = dest_dir / name  # name is one path component (_safe_name): it cannot leave dest_dir
            os.replace(tmp, target)
        except OSError as exc:  # network errors are GGUFPackErrors by now: this is the local disk
            _discard(tmp)
            raise _write_error(url, dest_dir, exc) from None
        except BaseException:
            _discard(tmp)
            raise
    return DownloadResult(target, sink.hashes["sha256"].hexdigest(), sink.size, final_url)


def _discard(tmp: str) -> None:
    """Remove our own temporary file (the one path this module ever deletes)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _write_error(url: str, dest_dir: Path, exc: OSError) -> GGUFPackError:
    if exc.errno in NO_SPACE_ERRNOS:
        return DiskFullError.from_os_error(exc, dest_dir)
    return GGUFPackError(f"cannot save the download of {url} in {dest_dir}: {exc.strerror or exc}; free some "
                         "space or check the permissions of the build directory")


def _resume(url: str, sink: _Sink, validator: str, timeout: float, bar: Bar) -> str | None:
    """Ask for the rest of the body once; return why it still failed, or ``None``."""
    headers = {"Range": f"bytes={sink.size}-"}
    if validator:
        headers["If-Range"] = validator
    with _open(url, timeout, headers) as response:
        if response.status == 206:
            match = re.fullmatch(rf"\s*bytes\s+({_NUMBER})-[0-9]+/(?:[0-9]+|\*)\s*",
                                 response.headers.get("Content-Range", ""))
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
