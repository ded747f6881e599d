"""Progress reporting, one switch for the whole program.

Modules that move bytes (downloads, hashing, layer packing, conversion) take a ``Progress`` and call
``progress.bar(...)``; the CLI decides once whether that means tqdm bars, plain log lines or nothing.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Bar(Protocol):
    def update(self, n: int) -> None: ...


class _NullBar:
    def update(self, n: int) -> None:
        pass


class _LockedBar:
    """A bar that several threads may update (parallel pushes and pulls): tqdm's counter is not atomic."""

    def __init__(self, bar: Bar) -> None:
        self._bar = bar
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        with self._lock:
            self._bar.update(n)


class Progress:
    """``mode`` is ``auto`` (bars on a TTY, else plain), ``tty``, ``plain`` or ``quiet``."""

    def __init__(self, mode: str = "quiet") -> None:
        if mode == "auto":
            mode = "tty" if sys.stderr.isatty() else "plain"
        if mode not in ("tty", "plain", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode

    def log(self, message: str) -> None:
        """A step line (``#3 [stage 1/2] CONVERT ...``) printed in tty and plain modes."""
        if self.mode != "quiet":
            print(message, file=sys.stderr, flush=True)

    @contextmanager
    def bar(self, description: str, total: int | None, unit: str = "B") -> Iterator[Bar]:
        """A progress bar over ``total`` units; a no-op outside tty mode."""
        if self.mode != "tty":
            yield _NullBar()
            return
        from tqdm import tqdm

        with tqdm(
            total=total, desc=description, unit=unit, unit_scale=unit == "B", unit_divisor=1024,
            file=sys.stderr, leave=False, dynamic_ncols=True,
        ) as bar:
            yield _LockedBar(bar)


QUIET = Progress("quiet")
