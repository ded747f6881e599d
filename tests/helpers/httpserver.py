"""A loopback HTTP server for tests: real sockets on 127.0.0.1, routes set up per test.

Usage::

    with LoopbackHTTPServer() as server:
        server.add_file("/m.gguf", data, cut_after=100)
        url = server.url("/m.gguf")
        ...
        assert server.requests[1].range == "bytes=100-"
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


@dataclass
class FileRoute:
    """Bytes served at one path.

    ``cut_after``: the first ``cut_times`` responses announce the full length but stop after that
    many body bytes, then close the connection, or with ``stall`` first hang for ``stall`` seconds
    (to hit the client's read timeout). ``ranges``: honor ``Range`` and advertise
    ``Accept-Ranges: bytes``.
    """

    data: bytes
    ranges: bool = True
    content_disposition: str | None = None
    cut_after: int | None = None
    cut_times: int = 1
    etag: str | None = None
    stall: float = 0.0


@dataclass(frozen=True)
class RedirectRoute:
    location: str
    status: int = 302


@dataclass(frozen=True)
class StatusRoute:
    status: int
    body: bytes = b""


@dataclass(frozen=True)
class RawRoute:
    """An answer written as given, for hostile-server tests: any status, any headers (in order,
    repeated or contradictory), a body that need not match its ``Content-Length``; the connection
    closes after it."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]

    @property
    def range(self) -> str | None:
        return self.headers.get("Range")


@dataclass
class _State:
    routes: dict[str, FileRoute | RedirectRoute | StatusRoute | RawRoute] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.state.lock:
            self.state.requests.append(RecordedRequest(self.path, dict(self.headers.items())))
            route = self.state.routes.get(self.path.split("?")[0])
            cut = isinstance(route, FileRoute) and route.cut_after is not None and route.cut_times > 0
            if cut:
                assert isinstance(route, FileRoute)
                route.cut_times -= 1
        if route is None:
            self._simple(404, b"not found")
        elif isinstance(route, StatusRoute):
            self._simple(route.status, route.body)
        elif isinstance(route, RawRoute):
            self._raw(route)
        elif isinstance(route, RedirectRoute):
            self.send_response(route.status)
            self.send_header("Location", route.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._file(route, cut)

    def _simple(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _raw(self, route: RawRoute) -> None:
        self.send_response(route.status)
        for name, value in route.headers:
            # into the buffer send_response started, as send_header does, but without its checks
            self._headers_buffer.append(f"{name}: {value}\r\n".encode("latin-1"))
        self.end_headers()
        self.wfile.write(route.body)
        self.wfile.flush()
        self.close_connection = True

    def _file(self, route: FileRoute, cut: bool) -> None:
        data = route.data
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        fresh = if_range is None or if_range == route.etag
        if route.ranges and wanted and fresh and int(wanted.group(1)) < len(data):
            start = int(wanted.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        if route.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if route.etag:
            self.send_header("ETag", route.etag)
        if route.content_disposition:
            self.send_header("Content-Disposition", route.content_disposition)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut:
            assert route.cut_after is not None
            self.wfile.write(body[: route.cut_after])
            self.wfile.flush()
            time.sleep(route.stall)
            self.close_connection = True
            return
        self.wfile.write(body)


class ThreadedServer:
    """A ``ThreadingHTTPServer`` on an ephemeral 127.0.0.1 port, served by a daemon thread during ``with``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class LoopbackHTTPServer(ThreadedServer):
    """A file server with per-test routes (see the module docstring)."""

    def __init__(self) -> None:
        self._state = _State()
        super().__init__(type("Handler", (_Handler,), {"state": self._state}))

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def add_file(self, path: str, data: bytes, **options: object) -> FileRoute:
        """Serve ``data`` at ``path``; ``options`` are :class:`FileRoute` fields."""
        route = FileRoute(data, **options)  # type: ignore[arg-type]
        self._state.routes[path] = route
        return route

    def add_redirect(self, path: str, location: str, status: int = 302) -> None:
        self._state.routes[path] = RedirectRoute(location, status)

    def add_status(self, path: str, status: int, body: bytes = b"") -> None:
        self._state.routes[path] = StatusRoute(status, body)

    def add_raw(self, path: str, status: int, headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
                body: bytes = b"") -> None:
        """Answer ``path`` with exactly these headers and body (see :class:`RawRoute`)."""
        self._state.routes[path] = RawRoute(status, tuple(headers), body)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)
