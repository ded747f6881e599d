"""Detached servers (``run --detach``): their records, ``ps`` and ``stop``.

```
<home>/state/run/<id>.json   one record per detached server (written atomically)
<home>/state/run/<id>.log    its output
```

A record is data read back from disk, so it is untrusted: whoever can write the store (a shared
store, an unpacked archive) can write one. It therefore holds no command and no path; every field
is checked (a record that fails is skipped with a warning, and left alone); the log's path derives
from the record's id, the cleanup (``docker rm`` of the container) from its runtime, image and
port. A process is signalled only when it is verifiably the server ggufpack started: its start
time (``/proc/<pid>/stat``) is the recorded one, so a reused pid is never mistaken for it, and its
environment holds ``GGUFPACK_RUN_ID=<id>``, which ggufpack set when it started it and which no
record can add to another process. Linux only (``/proc``): elsewhere no server is ever signalled.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import GGUFPackError, printable
from ..store.layout import state_path
from ..util.fsutil import atomic_write, ensure_store_dir, read_small_file, store_dir
from . import RUNTIMES
from .runtimes import Launch, docker_cleanup, docker_container_name, http_url
from .server import run_cleanup

_STOP_GRACE_S = 10.0
#: the environment variable that marks a server as started by ``run --detach`` with that record's id
RUN_ID_VAR = "GGUFPACK_RUN_ID"
_ID_RE = re.compile(r"[0-9a-f]{12}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_CREATED_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_START_TIME_RE = re.compile(r"\d{1,20}")
_HOST_RE = re.compile(r"[A-Za-z0-9.:%_-]{1,255}")
#: a record is a few hundred bytes; anything much bigger is not one of ours
_MAX_RECORD_BYTES = 256 << 10
_MAX_REF_CHARS = 1024
_MAX_ARGV = 4096
_MAX_ARG_CHARS = 64 << 10
#: pids are positive ints below 2**22 on Linux (``pid_max``); 1 is init, never a server of ours
_MAX_PID = 1 << 22

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Detached:
    """One detached server, as recorded (every field checked by :func:`parse_record`)."""

    id: str
    pid: int
    start_time: str
    ref: str
    image: str
    runtime: str
    host: str
    port: int
    argv: list[str]
    created: str

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    def log(self, home: Path) -> Path:
        return log_path(home, self.id)

    def cleanup(self) -> list[str] | None:
        """What to run once the server is gone: derived from the record, never read from it."""
        if self.runtime == "docker":
            return docker_cleanup(docker_container_name(self.image, self.port))
        return None

    def to_json(self, home: Path) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {**fields, "url": self.url, "log": str(self.log(home))}


@dataclass
class _Checker:
    """Checks the fields of one record, collecting what is wrong."""

    data: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    def get(self, name: str, kind: type, valid: Callable[[Any], object], what: str) -> Any:
        value = self.data.get(name)
        if type(value) is not kind or not valid(value):  # type(), not isinstance: True is not a pid
            self.problems.append(f"{name} is not {what}")
        return value


def parse_record(data: object, expected_id: str | None = None) -> Detached:
    """A :class:`Detached` from a record's JSON, every field checked; a :class:`GGUFPackError` saying
    what is wrong otherwise."""
    if not isinstance(data, dict):
        raise GGUFPackError("not a JSON object")
    unknown = sorted(set(data) - set(Detached.__dataclass_fields__))
    if unknown:
        raise GGUFPackError(f"unexpected field(s) {printable(', '.join(unknown)[:200])} (records hold no commands "
                            "or paths)")
    c = _Checker(data)
    run_id = c.get("id", str, _ID_RE.fullmatch, "12 hex digits")
    if expected_id is not None and run_id != expected_id:
        c.problems.append("id is not the record's file name")
    pid = c.get("pid", int, lambda v: 1 < v < _MAX_PID, f"a process id (2 to {_MAX_PID - 1})")
    start_time = c.get("start_time", str, _START_TIME_RE.fullmatch, "a process start time (digits)")
    ref = c.get("ref", str, lambda v: 0 < len(v) <= _MAX_REF_CHARS and v.isprintable(), "a printable image ref")
    image = c.get("image", str, _DIGEST_RE.fullmatch, "a sha256 digest")
    runtime = c.get("runtime", str, lambda v: v in RUNTIMES and v != "auto", f"one of {', '.join(RUNTIMES[1:])}")
    host = c.get("host", str, _HOST_RE.fullmatch, "a host name or address")
    port = c.get("port", int, lambda v: 0 < v < 65536, "a port (1 to 65535)")
    argv = c.get("argv", list, lambda v: 0 < len(v) <= _MAX_ARGV and all(
        isinstance(a, str) and len(a) <= _MAX_ARG_CHARS and "\x00" not in a for a in v), "a list of arguments")
    created = c.get("created", str, _CREATED_RE.fullmatch, "a UTC time (2024-05-01T12:00:00Z)")
    if c.problems:
        raise GGUFPackError("; ".join(c.problems))
    return Detached(run_id, pid, start_time, ref, image, runtime, host, port, list(argv), created)


_STATE_DIR = state_path("run")


def state_dir(home: Path) -> Path:
    return home / _STATE_DIR


def new_id() -> str:
    return secrets.token_hex(6)


def log_path(home: Path, run_id: str) -> Path:
    return state_dir(home) / f"{run_id}.log"


def prepare_log(home: Path, run_id: str) -> Path:
    """The log of a new server, its directory created (a symlinked state directory is refused)."""
    return ensure_store_dir(home, _STATE_DIR) / f"{run_id}.log"


def mark(launch: Launch, run_id: str) -> Launch:
    """``launch`` with the environment marker that lets ``ps``/``stop`` recognize the server later."""
    return replace(launch, environment={**launch.environment, RUN_ID_VAR: run_id})


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (None without ``/proc``, or when it is gone or a zombie)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def _has_marker(pid: int, run_id: str) -> bool:
    """Was ``pid`` started with ``GGUFPACK_RUN_ID=<run_id>`` (readable only for our own processes)?"""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read(4 << 20)
    except OSError:
        return False
    return f"{RUN_ID_VAR}={run_id}".encode() in environ.split(b"\0")


def alive(record: Detached) -> bool:
    """Is the recorded server still running, and verifiably the very process ``run --detach`` started?"""
    with contextlib.suppress(ChildProcessError):  # reap it if this process started it
        os.waitpid(record.pid, os.WNOHANG)
    return process_start_time(record.pid) == record.start_time and _has_marker(record.pid, record.id)


def save(home: Path, record: Detached) -> None:
    directory = ensure_store_dir(home, _STATE_DIR)
    fields = {name: getattr(record, name) for name in record.__dataclass_fields__}
    atomic_write(directory / f"{record.id}.json", json.dumps(fields, indent=2).encode(), directory)


def record_for(run_id: str, pid: int, launch: Launch, *, ref: str, image: str) -> Detached | None:
    """The record of the server ``launch`` started as ``pid``; None when it is already gone (or there is
    no ``/proc``): then it cannot be told from another process later, and nothing is recorded."""
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    start_time = process_start_time(pid)
    if start_time is None:
        return None
    return Detached(run_id, pid, start_time, ref, image, launch.runtime, launch.host, launch.port,
                    list(launch.argv), created)


def forget_record(home: Path, run_id: str) -> None:
    """Drop the record of a server that was stopped before it answered (its log stays: errors point to it)."""
    directory = store_dir(home, _STATE_DIR)
    if directory is not None and _ID_RE.fullmatch(run_id):
        (directory / f"{run_id}.json").unlink(missing_ok=True)


def _forget(directory: Path, record: Detached) -> None:
    (directory / f"{record.id}.json").unlink(missing_ok=True)
    (directory / f"{record.id}.log").unlink(missing_ok=True)


def _load(path: Path) -> Detached:
    """The record in ``path``; a :class:`GGUFPackError` saying why it is not a valid one."""
    if not path.name.endswith(".json") or not _ID_RE.fullmatch(path.name[:-5]):
        raise GGUFPackError("its name is not <12 hex digits>.json")
    try:
        raw = read_small_file(path, _MAX_RECORD_BYTES)
    except OSError as exc:
        raise GGUFPackError(f"unreadable ({exc.strerror})") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise GGUFPackError("not JSON") from None
    return parse_record(data, path.name[:-5])


def live(home: Path, warn: Warn | None = None) -> list[Detached]:
    """The detached servers still running. The record of a server that is gone is dropped (with its log,
    and its container for the docker runtime); an invalid record is reported to ``warn`` and left alone."""
    directory = store_dir(home, _STATE_DIR)
    if directory is None:
        if state_dir(home).is_symlink() or state_dir(home).parent.is_symlink():
            _warn(warn, f"{state_dir(home)}: a symlink, not a directory: ignored (remove it)")
        return []
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = _load(path)
        except GGUFPackError as exc:
            _warn(warn, f"ignoring {printable(str(path), 300)}: not a valid run record ({exc}); remove it")
            continue
        if alive(record):
            out.append(record)
            continue
        _forget(directory, record)
        run_cleanup(record.cleanup())
    return sorted(out, key=lambda r: r.created)


def _warn(warn: Warn | None, message: str) -> None:
    if warn is not None:
        warn(message)


def matching(home: Path, target: str, warn: Warn | None = None) -> list[Detached]:
    """``all``, a record ID (or a prefix of at least 4 characters), an image ref or image ID prefix."""
    records = live(home, warn)
    if target == "all":
        return records
    found = [r for r in records if (len(target) >= 4 and r.id.startswith(target)) or r.ref == target
             or (len(target) >= 4 and r.image.removeprefix("sha256:").startswith(target.removeprefix("sha256:")))]
    if not found:
        raise GGUFPackError(f"no running detached server matches {target!r} (see ggufpack ps)")
    return found


def _signal_and_wait(record: Detached, sig: int, grace: float) -> bool:
    """Send ``sig`` to the server's process group (checked to be ours just before); has it died within
    ``grace`` seconds?"""
    if alive(record):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(record.pid) == record.pid:  # it leads its own session, as server.start made it
                os.killpg(record.pid, sig)
            else:
                os.kill(record.pid, sig)
    deadline = time.monotonic() + grace
    while alive(record):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop(home: Path, record: Detached, grace: float = _STOP_GRACE_S) -> None:
    """SIGTERM the server's process group, SIGKILL it after ``grace`` s; then forget it."""
    if alive(record) and not _signal_and_wait(record, signal.SIGTERM, grace) \
            and not _signal_and_wait(record, signal.SIGKILL, grace):
        raise GGUFPackError(f"cannot stop server {record.id} (pid {record.pid}): it survived SIGKILL; "
                            "is it another user's process?")
    run_cleanup(record.cleanup())
    directory = store_dir(home, _STATE_DIR)
    if directory is not None:
        _forget(directory, record)
