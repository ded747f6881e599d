"""Detached servers (``run --detach``): their records, ``ps`` and ``stop``.

```
<home>/state/run/<id>.json   one record per detached server (written atomically)
<home>/state/run/<id>.log    its output
```

A record names the process by pid *and* start time (``/proc/<pid>/stat``), so a pid reused by an
unrelated process after the server died is never mistaken for it, let alone signalled.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import GGUFPackError
from ..store.fsutil import atomic_write
from .server import run_cleanup

_STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Detached:
    """One detached server."""

    id: str
    pid: int
    start_time: str | None
    ref: str
    image: str
    runtime: str
    url: str
    log: str
    argv: list[str]
    created: str
    cleanup: list[str] | None = None


def state_dir(home: Path) -> Path:
    return home / "state" / "run"


def new_id() -> str:
    return secrets.token_hex(6)


def log_path(home: Path, run_id: str) -> Path:
    directory = state_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{run_id}.log"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (None without ``/proc``, or when it is gone or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def alive(record: Detached) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it if this process started it
        os.waitpid(record.pid, os.WNOHANG)
    if record.start_time is not None:
        return process_start_time(record.pid) == record.start_time
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save(home: Path, record: Detached) -> None:
    directory = state_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / f"{record.id}.json", json.dumps(asdict(record), indent=2).encode(), directory)


def record_for(run_id: str, pid: int, *, ref: str, image: str, runtime: str, url: str, log: Path,
               argv: list[str], cleanup: list[str] | None) -> Detached:
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Detached(run_id, pid, process_start_time(pid), ref, image, runtime, url, str(log), argv, created, cleanup)


def forget_record(home: Path, run_id: str) -> None:
    """Drop the record of a server that was stopped before it answered (its log stays: errors point to it)."""
    (state_dir(home) / f"{run_id}.json").unlink(missing_ok=True)


def _forget(home: Path, record: Detached) -> None:
    (state_dir(home) / f"{record.id}.json").unlink(missing_ok=True)
    Path(record.log).unlink(missing_ok=True)


def _load(path: Path) -> Detached | None:
    try:
        return Detached(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def live(home: Path) -> list[Detached]:
    """The detached servers still running; records of dead (or unreadable) ones are dropped."""
    directory = state_dir(home)
    out = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        record = _load(path)
        if record is not None and alive(record):
            out.append(record)
            continue
        if record is not None:
            _forget(home, record)
            run_cleanup(record.cleanup)
        else:
            path.unlink(missing_ok=True)
    return sorted(out, key=lambda r: r.created)


def matching(home: Path, target: str) -> list[Detached]:
    """``all``, a record ID (or a prefix of at least 4 characters), an image ref or image ID prefix."""
    records = live(home)
    if target == "all":
        return records
    found = [r for r in records if (len(target) >= 4 and r.id.startswith(target)) or r.ref == target
             or (len(target) >= 4 and r.image.removeprefix("sha256:").startswith(target.removeprefix("sha256:")))]
    if not found:
        raise GGUFPackError(f"no running detached server matches {target!r} (see ggufpack ps)")
    return found


def _signal_and_wait(record: Detached, sig: int, grace: float) -> bool:
    """Send ``sig`` to the server's process group; has it died within ``grace`` seconds?"""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, sig)
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
    run_cleanup(record.cleanup)
    _forget(home, record)
