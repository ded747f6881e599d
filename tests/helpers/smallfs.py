"""Small file systems that fill up, for tests of what a full disk (ENOSPC) does: a tmpfs of a few
hundred KiB or MiB, in one of two ways.

- :func:`small_tmpfs`: mounted in this mount namespace for the duration of a ``with`` (root only),
  so the test, the ``ggufpack`` processes it starts and the servers it runs all see it;
- :func:`run_on_small_tmpfs`: mounted in a private user and mount namespace (``unshare -rm``, no
  root needed), where it exists only while one script runs in it; the script checks what it must
  and prints a JSON line, which is returned parsed.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _mount_argv(size: str, mount: str) -> list[str]:
    return ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount]


@functools.cache
def can_mount_tmpfs() -> bool:
    """Can a tmpfs be mounted in a private namespace here (what :func:`run_on_small_tmpfs` needs)?"""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", *_mount_argv("64k", "/mnt")], capture_output=True)
    return probe.returncode == 0


@contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A ``size`` tmpfs mounted at ``mount`` (created) for the body, unmounted at the end whatever happens;
    the test is skipped where this process may not mount one (it takes root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount.mkdir()
    done = subprocess.run(_mount_argv(size, str(mount)), capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def run_on_small_tmpfs(script: str, size: str, workdir: Path, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run ``script`` (Python source) as ``python3 script MOUNT ARGS...`` with a ``size`` tmpfs at MOUNT, in a
    private namespace; returns the JSON object it printed last. The checkout's ``ggufpack`` is the one imported."""
    mount = workdir / "small-fs"
    mount.mkdir()
    path = workdir / "on-small-fs.py"
    path.write_text(script, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    shell = f'{shlex.join(_mount_argv(size, str(mount)))} && exec "$0" "$@"'
    out = subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell, sys.executable, str(path), str(mount), *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])
