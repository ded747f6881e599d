"""A private Docker daemon for tests: Debian's ``docker.io`` (dockerd 20.10 with its embedded BuildKit).

Each :class:`LocalDockerd` runs its own ``dockerd --storage-driver=vfs`` with its data-root, exec-root,
pidfile and socket under a given directory, so it clashes neither with another test's daemon nor with a
daemon of the machine. It is started and stopped by its PID; ``docker_cmd`` is the CLI argv prefix
(``/usr/bin/docker -H unix://...``: the 20.10 CLI of the same package, which still builds with BuildKit
under ``DOCKER_BUILDKIT=1`` where a newer CLI on PATH would demand buildx).

Usage::

    with LocalDockerd(tmp_path, insecure_registries=[reg.host]) as d:
        d.docker("info")
        d.build(context_dir, tag="x")
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

DOCKERD = "/usr/sbin/dockerd"
DOCKER_CLI = "/usr/bin/docker"


def dockerd_unavailable_reason() -> str | None:
    """Why no private dockerd can run here, or None when it can (root, the binaries, containerd)."""
    for binary in (DOCKERD, DOCKER_CLI):
        if not os.access(binary, os.X_OK):
            return f"needs Debian's docker.io ({binary} missing)"
    if shutil.which("containerd") is None:
        return "needs containerd (Debian's docker.io depends on it)"
    if os.geteuid() != 0:
        return "dockerd needs root"
    return None


class LocalDockerd:
    """One dockerd process; a context manager that starts it, waits for ``docker info``, stops it by PID."""

    def __init__(self, workdir: Path, *, insecure_registries: Sequence[str] = (), debug: bool = False) -> None:
        self.workdir = Path(workdir)
        # unix sockets are limited to ~107 bytes: keep the exec-root and socket paths short
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_root = self.workdir / "data"
        self.exec_root = self.workdir / "x"
        self.socket = self.workdir / "d.sock"
        self.pidfile = self.workdir / "dockerd.pid"
        self.log_path = self.workdir / "dockerd.log"
        self.insecure_registries = list(insecure_registries)
        self.debug = debug
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def docker_cmd(self) -> list[str]:
        return [DOCKER_CLI, "-H", self.host]

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)
        env["DOCKER_CONFIG"] = str(self.workdir / "cli-config")  # no credentials or contexts of the machine
        env.update(extra)
        return env

    def docker(self, *args: str, buildkit: bool = False, check: bool = True, timeout: float = 600,
               **kwargs: Any) -> subprocess.CompletedProcess[str]:
        env = self.env(DOCKER_BUILDKIT="1" if buildkit else "0")
        kwargs.setdefault("capture_output", True)
        return subprocess.run([*self.docker_cmd, *args], env=env, check=check, timeout=timeout, text=True,
                              **kwargs)

    def build(self, context: Path, *args: str, tag: str | None = None, check: bool = True,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``DOCKER_BUILDKIT=1 docker build --progress=plain`` of ``context`` (the output is in the result)."""
        argv = ["build", "--progress=plain", *args]
        if tag:
            argv += ["-t", tag]
        return self.docker(*argv, str(context), buildkit=True, check=check, timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def start(self) -> LocalDockerd:
        argv = [DOCKERD, "--storage-driver=vfs", f"--data-root={self.data_root}", f"--exec-root={self.exec_root}",
                f"--pidfile={self.pidfile}", f"--host={self.host}",
                # containerd of its own, under the exec-root (dockerd starts it), no bridge or iptables
                "--iptables=false", "--ip-masq=false", "--bridge=none",
                # keep the build cache of the embedded BuildKit small enough for tests
                "--log-level=debug" if self.debug else "--log-level=info"]
        for registry in self.insecure_registries:
            argv.append(f"--insecure-registry={registry}")
        (self.workdir / "cli-config").mkdir(exist_ok=True)
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self._process.returncode}:\n{self.log_text()[-4000:]}")
            if self.socket.exists():
                probe = self.docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=10)
                if probe.returncode == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer on {self.host} within {timeout}s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to our dockerd's PID (it stops its own containerd and containers), SIGKILL if it hangs."""
        process = self._process
        self._process = None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> LocalDockerd:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def dockerd_fixture(name: str, **options: Any) -> Callable[..., Iterator[LocalDockerd]]:
    """A module-scoped pytest fixture serving one :class:`LocalDockerd`; skipped where none can run."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDockerd]:
        reason = dockerd_unavailable_reason()
        if reason:
            pytest.skip(reason)
        with LocalDockerd(tmp_path_factory.mktemp(name), **options) as daemon:
            yield daemon

    return fixture


@dataclass
class FrontendOnBuildKit:
    """A private dockerd, a loopback registry, and the frontend image pushed there (``remote``)."""

    dockerd: LocalDockerd
    registry: Any
    remote: str
    times: dict[str, float]


@contextmanager
def frontend_on_buildkit(work: Path, entry_module: str, tag: str | None = None) -> Iterator[FrontendOnBuildKit]:
    """Start dockerd and docker-registry under ``work``, build (or load from the cache) the frontend image
    whose entry point runs ``entry_module``, push it as ``REGISTRY/ggufpack-frontend:TAG`` (default: its
    input key), and stop both by PID afterwards; skips the test where either cannot run."""
    from ggufpack.cli_frontend import SERVE_ENTRY
    from ggufpack.frontend.image import ensure_frontend_image
    from tests.helpers.registry import LocalRegistry, registry_available

    reason = dockerd_unavailable_reason()
    if reason:
        pytest.skip(f"docker.io cannot run here: {reason}")
    if not registry_available():
        pytest.skip("docker.io cannot pull a frontend here: needs docker-registry, htpasswd and openssl")
    with LocalRegistry(work / "reg") as reg, LocalDockerd(work / "d") as d:
        started = time.monotonic()
        if entry_module == SERVE_ENTRY:  # the real frontend: made and pushed by `ggufpack frontend image`
            remote = f"{reg.host}/ggufpack-frontend:{tag or 'test'}"
            made = subprocess.run([sys.executable, "-m", "ggufpack", "frontend", "image", "-t", remote, "--push"],
                                  env=d.env(DOCKER_HOST=d.host), capture_output=True, text=True, timeout=1800)
            assert made.returncode == 0, made.stderr[-4000:]
            times: dict[str, float] = {}
        else:
            ref, times = ensure_frontend_image(d.docker_cmd, entry_module=entry_module, env=d.env())
            remote = f"{reg.host}/ggufpack-frontend:{tag or ref.rsplit(':', 1)[1]}"
            d.docker("tag", ref, remote)
            d.docker("push", remote)
        times["frontend_ready_s"] = time.monotonic() - started
        yield FrontendOnBuildKit(d, reg, remote, times)
    shutil.rmtree(work / "d" / "data", ignore_errors=True)  # vfs keeps a full copy per layer: ~700 MB
