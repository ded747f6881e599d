"""Hostile run records (``<store>/state/run/*.json``): whoever can write the store can write them, so
``ps`` and ``stop`` must never run a command, delete or open a path, or signal a process because a
record says so. Every case runs in a forked child under an address-space budget and a deadline
(:mod:`tests.helpers.bounded`); only our own errors may come out.

What a record may still do is name a server ggufpack started: the positive path is checked with a
real process started the way ``run --detach`` starts one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.errors import GGUFPackError
from ggufpack.run import detached
from ggufpack.run.runtimes import Launch
from ggufpack.run.server import start

from .helpers.bounded import assert_clean, run_bounded

REPO = Path(__file__).resolve().parents[1]
RUN_ID = "abcdef012345"
IMAGE = "sha256:" + "ab" * 32
HOSTILE = settings(max_examples=50, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GGUFPACK_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ggufpack", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def start_time(pid: int) -> str:
    value = detached.process_start_time(pid)
    assert value is not None
    return value


@pytest.fixture
def canary() -> Iterator[subprocess.Popen[bytes]]:
    """A process of ours in a session of its own: no record may get it signalled."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def old_style_record(pid: int, *, start: str | None, log: str, cleanup: list[str] | None) -> dict[str, Any]:
    """A record as ggufpack wrote them before: with a ``log`` path and a ``cleanup`` command in it."""
    return {"id": RUN_ID, "pid": pid, "start_time": start, "ref": "m:1", "image": IMAGE, "runtime": "docker",
            "url": "http://127.0.0.1:8080", "log": log, "argv": ["docker", "run"], "created": "2024-05-01T12:00:00Z",
            "cleanup": cleanup}


def valid_record(pid: int, start: str, run_id: str = RUN_ID) -> dict[str, Any]:
    return {"id": run_id, "pid": pid, "start_time": start, "ref": "m:1", "image": IMAGE, "runtime": "llama-server",
            "host": "127.0.0.1", "port": 8080, "argv": ["llama-server", "-m", "x"], "created": "2024-05-01T12:00:00Z"}


def write_record(home: Path, record: object, name: str = f"{RUN_ID}.json") -> Path:
    directory = home / "state" / "run"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(record))
    return path


# ------------------------------------------------------------------------------------- item 9


def test_item09_ps_never_runs_record_commands(tmp_path: Path) -> None:
    home, marker = tmp_path / "home", tmp_path / "pwned"
    record = old_style_record(dead_pid(), start=None, log=str(tmp_path / "x.log"),
                              cleanup=["sh", "-c", f"touch {marker}"])
    path = write_record(home, record)
    result = cli(home, "ps")
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "ps ran the record's cleanup command"
    assert "not a valid run record" in result.stderr and "Traceback" not in result.stderr
    assert path.exists()  # a record we cannot read is reported and left alone, never deleted
    assert cli(home, "stop", "all").returncode == 0
    assert not marker.exists(), "stop ran the record's cleanup command"


def test_item09_ps_never_unlinks_record_paths(tmp_path: Path) -> None:
    home, victim = tmp_path / "home", tmp_path / "precious.txt"
    victim.write_text("keep me")
    write_record(home, old_style_record(dead_pid(), start=None, log=str(victim), cleanup=None))
    assert cli(home, "ps").returncode == 0
    assert cli(home, "ps", "--format", "json").stdout.strip() == "[]"
    assert victim.read_text() == "keep me", "ps deleted the path a record named as its log"


def test_item09_stop_never_signals_a_process_it_did_not_start(tmp_path: Path, canary: subprocess.Popen[bytes]) -> None:
    """The record names a live process with its true start time: ``stop all`` used to kill its group."""
    home = tmp_path / "home"
    write_record(home, old_style_record(canary.pid, start=start_time(canary.pid), log=str(tmp_path / "l"),
                                        cleanup=None))
    result = cli(home, "stop", "all")
    assert result.returncode == 0, result.stderr
    time.sleep(0.2)
    assert canary.poll() is None, "stop signalled a process named by a record"
    # the same in today's record format: the pid and start time match, but it does not carry our marker
    write_record(home, valid_record(canary.pid, start_time(canary.pid)))
    assert cli(home, "stop", RUN_ID[:6]).returncode == 1  # not a server of ours: no match
    time.sleep(0.2)
    assert canary.poll() is None
    assert not (home / "state" / "run" / f"{RUN_ID}.json").exists()  # a valid record of a gone server is dropped


def test_item09_sibling_symlinked_state_dir_is_not_followed(tmp_path: Path) -> None:
    """``state/run`` pointing elsewhere: ps used to delete every ``*.json`` there that was not a record."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "settings.json").write_text('{"mine": true}')
    (elsewhere / f"{RUN_ID}.json").write_text(json.dumps(valid_record(dead_pid(), "1")))
    (elsewhere / f"{RUN_ID}.log").write_text("a log that is not ours")
    (home / "state").mkdir(parents=True)
    (home / "state" / "run").symlink_to(elsewhere)
    result = cli(home, "ps")
    assert sorted(p.name for p in elsewhere.iterdir()) == [f"{RUN_ID}.json", f"{RUN_ID}.log", "settings.json"]
    assert result.returncode == 0, result.stderr
    assert "symlink" in result.stderr


def _ps_in_process(home: Path) -> tuple[int, str, str]:
    """``ggufpack ps`` in this (forked, bounded) process: exit code, stdout, stderr."""
    from ggufpack.cli import main

    os.environ["GGUFPACK_HOME"] = str(home)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["ps"])
    return code, out.getvalue(), err.getvalue()


def test_item09_sibling_records_that_are_fifos_or_devices_are_bounded(tmp_path: Path) -> None:
    """A record that is a FIFO used to hang ``ps``; one linked to /dev/zero, to exhaust its memory."""
    home = tmp_path / "home"
    directory = home / "state" / "run"
    directory.mkdir(parents=True)
    (directory / "aaaaaaaaaaaa.json").symlink_to("/dev/zero")
    os.mkfifo(directory / "bbbbbbbbbbbb.json")
    (directory / "cccccccccccc.json").write_bytes(b"[" * 200_000)  # deep nesting: a RecursionError in json
    outcome = assert_clean(run_bounded(_ps_in_process, home, budget_mb=256, seconds=20))
    assert outcome.kind == "ok"
    code, _, err = outcome.value
    assert code == 0 and err.count("not a valid run record") == 3, err
    assert sorted(p.name for p in directory.iterdir()) == ["aaaaaaaaaaaa.json", "bbbbbbbbbbbb.json",
                                                          "cccccccccccc.json"]


def test_item09_a_server_started_by_run_detach_is_listed_and_stopped(tmp_path: Path) -> None:
    """The path that must keep working: the marker set at start is what makes a record trusted."""
    home = tmp_path / "home"
    run_id = detached.new_id()
    log = detached.prepare_log(home, run_id)
    launch = detached.mark(Launch("llama-server", [sys.executable, "-c", "import time; time.sleep(120)"],
                                  "127.0.0.1", 18080, "/health"), run_id)
    proc = start(launch, log)
    try:
        record = detached.record_for(run_id, proc.pid, launch, ref="m:1", image=IMAGE)
        assert record is not None
        detached.save(home, record)
        listed = json.loads(cli(home, "ps", "--format", "json").stdout)
        assert [(r["id"], r["pid"], r["url"], r["log"]) for r in listed] == [
            (run_id, proc.pid, "http://127.0.0.1:18080", str(log))]
        stopped = cli(home, "stop", run_id)
        assert stopped.returncode == 0 and stopped.stdout.split() == [run_id], stopped.stderr
        assert proc.wait(10) == -signal.SIGTERM
        assert not list(log.parent.glob(f"{run_id}.*"))
    finally:
        proc.kill()
        proc.wait()


def test_item09_records_carry_no_commands_or_paths(tmp_path: Path) -> None:
    record = valid_record(12345, "678")
    for extra in ({"cleanup": ["rm", "-rf", "/"]}, {"log": "/etc/passwd"}, {"url": "http://x"}):
        with pytest.raises(GGUFPackError, match="unexpected field"):
            detached.parse_record({**record, **extra})
    parsed = detached.parse_record(record)
    assert parsed.log(tmp_path) == tmp_path / "state" / "run" / f"{RUN_ID}.log"
    docker = detached.parse_record({**record, "runtime": "docker"})
    assert docker.cleanup() == ["docker", "rm", "--force", f"ggufpack-{'ab' * 6}-8080"]


# ------------------------------------------------------------------------- property-based cases

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(["/etc/passwd", "../../x", "1", "0", RUN_ID, IMAGE, "docker"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = list(valid_record(2, "1"))


@st.composite
def hostile_records(draw: st.DrawFn, pids: list[int], starts: list[str]) -> tuple[str, object]:
    """A file name and a JSON value: a valid record with fields replaced, removed or added, or anything."""
    if draw(st.integers(0, 5)) == 0:
        value: object = draw(JSON)
    else:
        pid = draw(st.sampled_from([*pids, 1, 0, -1, 2**22, 2**31, True]))
        record: dict[str, Any] = valid_record(pid, draw(st.sampled_from([*starts, "0", "x"])))
        for _ in range(draw(st.integers(0, 3))):
            action = draw(st.sampled_from(["replace", "remove", "add"]))
            name = draw(st.sampled_from(FIELDS))
            if action == "replace":
                record[name] = draw(JSON)
            elif action == "remove":
                record.pop(name, None)
            else:
                record[draw(st.sampled_from(["cleanup", "log", "url", "env", "x"]))] = draw(JSON)
        value = record
    name = draw(st.sampled_from([f"{RUN_ID}.json", "0123456789ab.json", "ABCDEF012345.json", "x y.json", ".json"]))
    return name, value


def _ps_and_stop(home: Path) -> list[str]:
    warnings: list[str] = []
    ids = [r.id for r in detached.live(home, warnings.append)]
    for record in detached.matching(home, "all", warnings.append):
        detached.stop(home, record, grace=1)
    for warning in warnings:
        assert isinstance(warning, str) and "\x1b" not in warning
    return ids


@HOSTILE
@given(data=st.data())
def test_random_records_never_run_delete_or_signal(tmp_path_factory: pytest.TempPathFactory,
                                                   data: st.DataObject) -> None:
    root = tmp_path_factory.mktemp("records")
    home, victim = root / "home", root / "victim.txt"
    victim.write_text("keep")
    canary = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        name, record = data.draw(hostile_records([canary.pid, dead_pid()], [start_time(canary.pid)]))
        if isinstance(record, dict) and data.draw(st.booleans()):
            record.update({"log": str(victim), "cleanup": ["rm", "-f", str(victim)]})
        path = write_record(home, record, name)
        outcome = assert_clean(run_bounded(_ps_and_stop, home, budget_mb=256, seconds=30))
        assert outcome.kind == "ok" and outcome.value == []  # no record names a server we started
        time.sleep(0.05)
        assert canary.poll() is None, f"a record got the canary signalled: {record!r}"
        assert victim.read_text() == "keep"
        try:
            detached.parse_record(record, name[:-5])
        except GGUFPackError:
            assert path.exists()  # an invalid record is left alone
    finally:
        canary.kill()
        canary.wait()


@HOSTILE
@given(JSON)
def test_parse_record_accepts_only_well_typed_records(value: object) -> None:
    try:
        record = detached.parse_record(value)
    except GGUFPackError as exc:
        assert str(exc)
        return
    assert type(record.pid) is int and record.pid > 1 and type(record.port) is int
    assert all(isinstance(a, str) for a in record.argv)


# ------------------------------------------- siblings: other store state that is read back or deleted


def test_item09_sibling_prune_never_deletes_through_symlinked_state_or_ingest(tmp_path: Path) -> None:
    """``prune`` cleans ``ingest/`` and ``state/{downloads,uploads,imports}``: through a symlink planted
    there it used to delete whatever the target directory held."""
    from ggufpack.store import Store

    store = Store(tmp_path / "home")
    targets = {}
    for name in ("downloads", "imports", "ingest"):
        target = tmp_path / f"precious-{name}"
        (target / "sub").mkdir(parents=True)
        (target / "notes.txt").write_text("keep")
        (target / f"{'ab' * 32}.partial").write_text("keep")
        (target / "sub" / "deep.txt").write_text("keep")
        targets[name] = target
    (store.root / "state").mkdir()
    (store.root / "state" / "downloads").symlink_to(targets["downloads"])
    (store.root / "state" / "imports").symlink_to(targets["imports"])
    os.rmdir(store.layout.ingest)
    store.layout.ingest.symlink_to(targets["ingest"])
    outcome = assert_clean(run_bounded(store.prune, budget_mb=256, seconds=30))
    for target in targets.values():
        assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == [
            f"{'ab' * 32}.partial", "notes.txt", "sub", "sub/deep.txt"], outcome


def test_item09_sibling_prune_survives_fifos_and_directories_where_files_belong(tmp_path: Path) -> None:
    from ggufpack.store import Store

    store = Store(tmp_path / "home")
    os.mkfifo(store.layout.ingest / "fifo.tmp")  # opening it for reading used to block prune forever
    (store.layout.blobs / ("cd" * 32)).mkdir()  # unlinking a directory used to be a traceback
    (store.layout.ingest / "link.tmp").symlink_to(tmp_path / "outside")
    (tmp_path / "outside").write_text("keep")
    assert_clean(run_bounded(store.prune, budget_mb=256, seconds=20), allow_ok=True)
    assert (tmp_path / "outside").read_text() == "keep"
    assert not (store.layout.ingest / "link.tmp").is_symlink()


def test_item09_sibling_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    """The store lock is opened with O_CREAT: through a planted dangling symlink that created a file
    wherever it pointed."""
    home = tmp_path / "home"
    assert cli(home, "list").returncode == 0
    (home / "lock").unlink()
    (home / "lock").symlink_to(tmp_path / "created-elsewhere")
    result = cli(home, "tag", "nothing:1", "other:1")
    assert not (tmp_path / "created-elsewhere").exists()
    assert result.returncode == 1 and "is a symlink" in result.stderr and "Traceback" not in result.stderr


def test_item09_sibling_index_json_that_is_a_device_is_bounded(tmp_path: Path) -> None:
    from ggufpack.store import Store

    store = Store(tmp_path / "home")
    store.layout.index.unlink()
    store.layout.index.symlink_to("/dev/zero")
    assert_clean(run_bounded(store.images, budget_mb=256, seconds=20), allow_ok=False)
    (store.layout.index).unlink()
    store.layout.index.write_bytes(b"[" * 100_000)
    assert_clean(run_bounded(store.images, budget_mb=256, seconds=20), allow_ok=False)
