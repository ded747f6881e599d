"""Run a piece of code on hostile input in a child process with a memory cap and a deadline.

The hostile-input tests assert two things of every case: only our own error types come out, and
the work stays bounded. A forked child gets an address-space limit of *its parent's current size
plus a budget* (the test process already maps torch, llama.cpp and friends, so an absolute limit
would mean nothing), and a wall-clock deadline after which it is killed. A ``MemoryError`` in the
child, a kill by the deadline, or any exception that is not a :class:`GGUFPackError` fails the case.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: default extra address space a case may map beyond what the test process already has
DEFAULT_BUDGET_MB = 768


@dataclass(frozen=True)
class Outcome:
    """What the child reported: ``kind`` is ``ok``, ``ours`` (a GGUFPackError), ``foreign`` or ``timeout``."""

    kind: str
    type_name: str = ""
    message: str = ""
    value: Any = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.type_name}: {self.message[:2000]}"


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _child(conn: Any, budget: int, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    from ggufpack.errors import GGUFPackError

    limit = _vm_size() + budget
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        value = fn(*args, **kwargs)
        try:
            conn.send(Outcome("ok", value=value))
        except Exception:  # an unpicklable result still counts as success
            conn.send(Outcome("ok", value=repr(value)[:2000]))
    except GGUFPackError as exc:
        conn.send(Outcome("ours", type(exc).__name__, str(exc)[:20000]))
    except BaseException as exc:
        conn.send(Outcome("foreign", type(exc).__name__, traceback.format_exc()[-8000:]))
    finally:
        conn.close()
        os._exit(0)


def run_bounded(
    fn: Callable[..., Any], *args: Any, budget_mb: int = DEFAULT_BUDGET_MB, seconds: float = 60.0, **kwargs: Any
) -> Outcome:
    """Run ``fn(*args, **kwargs)`` in a forked child capped at ``budget_mb`` more address space."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, budget_mb << 20, fn, args, kwargs), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(seconds):
            proc.kill()
            proc.join()
            return Outcome("timeout", message=f"still running after {seconds:.0f} s")
        try:
            outcome: Outcome = parent.recv()
        except EOFError:
            proc.join()
            return Outcome("foreign", "ChildDied", f"the child exited with {proc.exitcode} and reported nothing")
    finally:
        parent.close()
    proc.join(10)
    return outcome


def assert_clean(outcome: Outcome, *, allow_ok: bool = True) -> Outcome:
    """Fail unless the case succeeded (when allowed) or raised one of our own errors, in bounds."""
    allowed = {"ok", "ours"} if allow_ok else {"ours"}
    assert outcome.kind in allowed, str(outcome)
    return outcome


def assert_refused(outcome: Outcome, *fragments: str) -> Outcome:
    """Fail unless the case raised our own error, whose message holds every fragment (case-insensitive)."""
    assert outcome.kind == "ours", str(outcome)
    lowered = outcome.message.lower()
    for fragment in fragments:
        assert fragment.lower() in lowered, f"{fragment!r} not in {outcome.message!r}"
    return outcome
