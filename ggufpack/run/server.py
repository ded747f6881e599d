"""Running a server process: a free port first, start, wait until it answers, forward signals, stop.

The server runs in its own session (process group), so a Ctrl-C on the terminal reaches ggufpack
only, which forwards it (a second one kills); whatever goes wrong before the server answers, the
process is stopped before ggufpack returns: no orphan is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from ..errors import GGUFPackError
from .runtimes import Launch

_POLL_S = 0.2
_STOP_GRACE_S = 10.0
_TAIL_LINES = 20
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ServerExited(GGUFPackError):
    """The server process ended before it answered on its health endpoint."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def check_port(host: str, port: int) -> None:
    """A clear error when ``host:port`` is taken (the server would fail later, less clearly)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise GGUFPackError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is not "in use"
        try:
            sock.bind(address)
        except OSError as exc:
            raise GGUFPackError(
                f"port {port} on {host} is in use ({exc.strerror}); choose another with -p/--port, "
                "or stop what listens there (ggufpack ps lists detached servers)"
            ) from None


def exit_status(returncode: int) -> int:
    """A process's status as a shell reports it: 128+N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start(launch: Launch, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the server in a session of its own; its output goes to ``log``, else to our stderr
    (our stdout carries only ggufpack's own lines). It inherits ``launch.keep_fds`` (its lease)."""
    out = log.open("ab") if log is not None else None
    env = {**os.environ, **launch.environment} if launch.environment else None
    try:
        return subprocess.Popen(launch.argv, stdin=subprocess.DEVNULL, stdout=out or 2, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, pass_fds=launch.keep_fds)
    except OSError as exc:
        raise GGUFPackError(f"cannot start {launch.argv[0]}: {exc.strerror}") from None
    finally:
        if out is not None:
            out.close()


#: straight to the server: an ``http_proxy`` in the environment must not carry a loopback health check away
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(url: str) -> bool:
    """Does the server answer as ready? 200, or 401/403 from a server whose CMD sets ``--api-key``
    (llama-cpp-python guards every route; it only listens once its model is loaded)."""
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:  # 503 while llama-server loads
        return exc.code in (401, 403)
    except (urllib.error.URLError, OSError):  # not listening yet
        return False


def wait_healthy(proc: subprocess.Popen[bytes], launch: Launch, timeout: float, log: Path | None) -> None:
    """Return once the health endpoint answers 200; raise when the server exits or time runs out."""
    deadline = time.monotonic() + timeout

    def output() -> str:
        return f":\n{tail(log)}\n(log: {log})" if log is not None else " (its output is above)"

    while True:
        status = proc.poll()
        if status is not None:
            raise ServerExited(f"the {launch.runtime} server exited with status {exit_status(status)} before it "
                               f"answered on {launch.url}{output()}", exit_status(status))
        if _answers(launch.health_url):
            return
        if time.monotonic() > deadline:
            raise GGUFPackError(f"the {launch.runtime} server did not answer on {launch.health_url} within "
                                f"{timeout:g} s, so it was stopped (a big model may need a longer --timeout)"
                                f"{output()}")
        time.sleep(_POLL_S)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop(proc: subprocess.Popen[bytes], launch: Launch, grace: float = _STOP_GRACE_S) -> None:
    """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds, reap it, clean up."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    _signal_group(proc.pid, signal.SIGKILL)  # anything the server left in its group
    run_cleanup(launch.cleanup)


def run_cleanup(cleanup: list[str] | None) -> None:
    if cleanup:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(cleanup, capture_output=True, timeout=60, check=False)


@contextlib.contextmanager
def _forwarding(target: Callable[[], int | None]) -> Iterator[list[int]]:
    """While inside, SIGINT/SIGTERM/SIGHUP go to the server's group (the second one as SIGKILL)."""
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        pid = target()
        if pid is not None:
            _signal_group(pid, signal.SIGKILL if len(received) > 1 else signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(launch: Launch, timeout: float, on_ready: Callable[[], None]) -> int:
    """Run the server in the foreground until it exits; its exit status."""
    proc: subprocess.Popen[bytes] | None = None
    with _forwarding(lambda: proc.pid if proc is not None else None) as received:
        proc = start(launch)
        try:
            if received:  # a signal came before the server existed
                return 128 + received[0]
            try:
                wait_healthy(proc, launch, timeout, None)
            except ServerExited as exc:
                if received:
                    return exc.status
                raise
            on_ready()
            return exit_status(proc.wait())
        finally:
            stop(proc, launch)


def serve_detached(
    launch: Launch, timeout: float, log: Path, remember: Callable[[subprocess.Popen[bytes]], None],
    forget: Callable[[], None],
) -> subprocess.Popen[bytes]:
    """Start the server with its output in ``log`` and return once it answers (it keeps running).

    ``remember`` records the server as soon as it exists, so that ``stop`` can reach it whenever an
    interruption comes; ``forget`` drops the record if it is stopped here before it answered.
    """
    proc: subprocess.Popen[bytes] | None = None
    with _forwarding(lambda: proc.pid if proc is not None else None) as received:
        proc = start(launch, log)
        try:
            remember(proc)
            if received:  # a signal came before the server existed
                raise KeyboardInterrupt
            wait_healthy(proc, launch, timeout, log)
        except BaseException:
            stop(proc, launch)
            forget()
            raise
    return proc
