"""A request-buffering reverse proxy on loopback that can cut a client's connection mid-upload.

Like nginx in front of a registry (``proxy_request_buffering on``, its default), it reads every
request whole before forwarding it, so a client that dies in the middle of a request body never
reaches the registry with half a chunk. ``cut_after`` makes it drop the client connection once
that many PATCH body bytes have arrived in total, in the middle of a request, forwarding nothing of
that request: the "connection killed mid-upload" of a real network. ``cut_response_after`` does the
same to a download: the first GET response longer than that is cut after that many body bytes.
"""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler

from .httpserver import ThreadedServer

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class BufferingProxy(ThreadedServer):
    def __init__(self, upstream_host: str, upstream_port: int, *, cut_after: int | None = None,
                 cut_response_after: int | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.cut_after = cut_after
        self.cut_response_after = cut_response_after
        self.ranges: list[str] = []  # Range headers of the GET requests seen
        self.patch_bytes = 0  # PATCH body bytes received from clients
        self.cuts = 0
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _take(self, length: int) -> int | None:
        """How many body bytes to read before cutting, or None to pass the request whole."""
        with self._lock:
            if self.cut_after is not None and self.patch_bytes + length > self.cut_after:
                keep = self.cut_after - self.patch_bytes
                self.cut_after = None  # one cut
                self.cuts += 1
                self.patch_bytes += keep
                return keep
            self.patch_bytes += length
            return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                if self.command == "PATCH":
                    keep = proxy._take(length)
                    if keep is not None:
                        self.rfile.read(keep)
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                body = self.rfile.read(length) if length else None
                if self.command == "GET" and self.headers.get("Range"):
                    proxy.ranges.append(self.headers["Range"])
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                resp = upstream.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for key, value in resp.getheaders():
                    if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                # A HEAD answer has no body but tells the length of what a GET would return.
                length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                cut = proxy.cut_response_after
                if self.command == "GET" and cut is not None and len(data) > cut:
                    proxy.cut_response_after = None
                    proxy.cuts += 1
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                elif self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        return Handler
