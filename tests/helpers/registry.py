"""A real OCI registry for tests: Debian's ``docker-registry`` (CNCF distribution 2.8) on loopback.

Each :class:`LocalRegistry` runs its own process with its own config, storage directory and log, on a
free 127.0.0.1 port: plain HTTP, with htpasswd basic auth, or behind TLS with a self-signed
certificate (made with ``openssl``). Tests reach into :attr:`LocalRegistry.storage` to tamper with
blobs and read :attr:`LocalRegistry.log_path` to see which requests the registry served.

Usage::

    with LocalRegistry(tmp_path, auth=("alice", "s3cret"), tls=True) as reg:
        reg.host        # "127.0.0.1:PORT"
        reg.ca_cert     # the self-signed certificate, usable as a CA bundle
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

REGISTRY_BINARY = "docker-registry"


def registry_available() -> bool:
    """Whether the registry and the tools the fixtures need (htpasswd, openssl) are installed."""
    return all(shutil.which(tool) for tool in (REGISTRY_BINARY, "htpasswd", "openssl"))


def self_signed_certificate(workdir: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (usable as its own CA bundle) and its key, made by openssl."""
    cert, key = Path(workdir) / "cert.pem", Path(workdir) / "key.pem"
    Path(workdir).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    """One registry process; a context manager that starts it, waits until it answers, and stops it."""

    def __init__(self, workdir: Path, *, auth: tuple[str, str] | None = None, tls: bool = False,
                 token_auth: dict[str, object] | None = None) -> None:
        """``auth``: htpasswd basic auth; ``token_auth``: a bearer-token ``auth`` section (see
        :class:`tests.helpers.tokenserver.TokenServer`)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.token_auth = token_auth
        self.tls = tls
        self.port = free_port()
        self.storage = self.workdir / "storage"
        self.log_path = self.workdir / "registry.log"
        self.ca_cert: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def blob_data_path(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (distribution's filesystem driver layout)."""
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _write_config(self) -> Path:
        # A fixed secret keeps upload sessions valid across a restart of the registry.
        http: dict[str, object] = {"addr": self.host, "secret": "ggufpack-test-secret",
                                   "headers": {"X-Content-Type-Options": ["nosniff"]}}
        if self.tls:
            cert, key = self_signed_certificate(self.workdir)
            http["tls"] = {"certificate": str(cert), "key": str(key)}
            self.ca_cert = cert
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}, "fields": {"service": "registry"}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": http,
        }
        if self.auth:
            htpasswd = self.workdir / "htpasswd"
            user, password = self.auth
            out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True)
            htpasswd.write_text(out.stdout, encoding="utf-8")
            config["auth"] = {"htpasswd": {"realm": "ggufpack-test", "path": str(htpasswd)}}
        elif self.token_auth:
            config["auth"] = self.token_auth
        path = self.workdir / "config.yml"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
        return path

    def start(self) -> LocalRegistry:
        config = self._write_config()
        log = self.log_path.open("ab")
        self._process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=log)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        context = ssl._create_unverified_context() if self.tls else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self._process.returncode}:\n{self.log_text()}")
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=context)
                return
            except urllib.error.HTTPError as e:
                if e.code == 401:  # auth enabled: it answers
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not answer on {self.url} within {timeout}s:\n{self.log_text()}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def registry_fixture(name: str, **options: Any) -> Callable[..., Iterator[LocalRegistry]]:
    """A module-scoped pytest fixture serving one :class:`LocalRegistry` (``options``: its keyword
    arguments) from a fresh directory; the tests that use it are skipped where no registry can run."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
        if not registry_available():
            pytest.skip("needs docker-registry, htpasswd and openssl")
        with LocalRegistry(tmp_path_factory.mktemp(name), **options) as reg:
            yield reg

    return fixture
