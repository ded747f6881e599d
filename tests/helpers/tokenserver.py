"""A bearer-token server for the test registry, the way Docker Hub, GHCR and Harbor authenticate.

The registry answers ``401`` with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``; the
client asks this server for a token (with basic credentials), and sends it back to the registry.
Tokens are JWTs signed RS256 with a key made by ``openssl``; the registry trusts its self-signed
certificate (``rootcertbundle``), carried in the token's ``x5c`` header. Signing also goes through
the ``openssl`` command, so no Python crypto library is needed.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .httpserver import ThreadedServer

ISSUER = "ggufpack-test-issuer"
SERVICE = "ggufpack-test-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenServer(ThreadedServer):
    def __init__(self, workdir: Path, user: str, password: str) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user, self.password = user, password
        self.key = self.workdir / "token-key.pem"
        self.cert = self.workdir / "token-cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ISSUER}",
             "-keyout", str(self.key), "-out", str(self.cert)], check=True, capture_output=True,
        )
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self._x5c = base64.b64encode(der).decode("ascii")
        self.requests: list[dict[str, str]] = []
        super().__init__(self._handler())

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth_config(self) -> dict[str, object]:
        """The registry's ``auth`` section for this server."""
        return {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                          "rootcertbundle": str(self.cert)}}

    def _sign(self, claims: dict[str, object]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                                   check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def _token(self, subject: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        return self._sign({"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                           "iat": now, "jti": uuid.uuid4().hex, "access": access})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization", "")
                server.requests.append({"scope": " ".join(query.get("scope", [])), "authorization": auth[:6]})
                expected = "Basic " + base64.b64encode(f"{server.user}:{server.password}".encode()).decode()
                if auth != expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
                body = json.dumps({"token": server._token(server.user, scopes), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
