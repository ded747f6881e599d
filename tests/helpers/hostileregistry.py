"""A registry that says whatever a test wants: real sockets on 127.0.0.1, HTTP or TLS.

Each answer is set per ``(METHOD, path)`` (the query is ignored): any status, any headers, written
as given (repeated, contradictory, not numbers), and a body that need not match its
``Content-Length``, or a long one streamed without holding it in memory. Every request is recorded.
What is not set gets the distribution API's 404. Routes may be callables, for answers that depend on
the request (a challenge until the right ``Authorization`` comes).

Usage::

    with HostileRegistry() as reg:
        digest = reg.blob("r", b"config bytes")
        reg.manifest("r", "1", {"schemaVersion": 2, ...})
        reg.set("GET", f"/v2/r/blobs/{digest}", Answer(302, [("Location", "file:///etc/passwd")]))
        ... RegistryClient(reg.host, reg.settings, None) ...
        assert reg.requests[-1].path == ...
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from ggufpack.oci import mediatypes as mt
from ggufpack.registry.settings import RegistrySettings

from .httpserver import ThreadedServer
from .registry import self_signed_certificate


@dataclass(frozen=True)
class Answer:
    """One answer. ``stream``: send that many bytes of ``fill`` after ``body`` (a big body, no memory).
    ``length``: the ``Content-Length`` header to send (default: the real length; ``""``: none)."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: int = 0
    fill: bytes = b"x"
    length: str | None = None


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


Route = Answer | Callable[[Seen], Answer]

NOT_FOUND = Answer(404, [("Content-Type", "application/json")],
                   b'{"errors": [{"code": "NAME_UNKNOWN", "message": "not here"}]}')


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class HostileRegistry(ThreadedServer):
    def __init__(self, tls_dir: Path | None = None) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        #: asked first for every request: an answer (a 401 challenge, say) or None to go on to the routes
        self.gate: Callable[[Seen], Answer | None] | None = None
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        super().__init__(self._handler())
        self.ca_cert: Path | None = None
        if tls_dir is not None:
            self.ca_cert, key = self_signed_certificate(tls_dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.ca_cert, key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_cert else 'http'}://{self.host}"

    @property
    def settings(self) -> RegistrySettings:
        """How a client reaches this registry (trusting its certificate when it has one)."""
        if self.ca_cert:
            return RegistrySettings(ca_file=str(self.ca_cert))
        return RegistrySettings(plain_http=True)

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def set(self, method: str, path: str, route: Route) -> None:
        self.routes[(method, path)] = route

    def blob(self, repository: str, data: bytes) -> str:
        """Serve ``data`` as a blob (GET and HEAD); returns its digest."""
        digest = digest_of(data)
        self.set("GET", f"/v2/{repository}/blobs/{digest}", Answer(200, [], data))
        self.set("HEAD", f"/v2/{repository}/blobs/{digest}", Answer(200, [], b"", length=str(len(data))))
        return digest

    def manifest(self, repository: str, reference: str, document: Any, media_type: str = mt.OCI_MANIFEST) -> str:
        """Serve a manifest (a JSON value, or bytes as they are) under a tag and its digest; returns the digest."""
        data = document if isinstance(document, bytes) else json.dumps(document).encode()
        answer = Answer(200, [("Content-Type", media_type)], data)
        digest = digest_of(data)
        for ref in (reference, digest):
            self.set("GET", f"/v2/{repository}/manifests/{ref}", answer)
        return digest

    def _answer(self, seen: Seen) -> Answer:
        stopped = self.gate(seen) if self.gate is not None else None
        if stopped is not None:
            return stopped
        route = self.routes.get((seen.method, seen.path.split("?", 1)[0]))
        if route is None:
            return NOT_FOUND
        return route(seen) if callable(route) else route

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                seen = Seen(self.command, self.path, dict(self.headers.items()))
                with registry._lock:
                    registry._seen.append(seen)
                answer = registry._answer(seen)
                self.send_response_only(answer.status)
                for name, value in answer.headers:  # as given: no checks, repeats kept
                    self._headers_buffer.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
                total = len(answer.body) + answer.stream
                length_header = str(total) if answer.length is None else answer.length
                if length_header:
                    self._headers_buffer.append(f"Content-Length: {length_header}\r\n".encode("latin-1", "replace"))
                self._headers_buffer.append(b"Connection: close\r\n")
                self.end_headers()
                if self.command != "HEAD":
                    try:
                        self.wfile.write(answer.body)
                        left, block = answer.stream, answer.fill * max(1, (1 << 20) // max(1, len(answer.fill)))
                        while left > 0:
                            self.wfile.write(block[:left])
                            left -= min(left, len(block))
                    except OSError:
                        pass  # the client stopped reading: that is what a cap does
                self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler
