"""Strict modes for executable state: a backend's tools are run only when nobody else could have put them there.

``<home>/backends/*/bin`` and the sideload directories named in ``<home>/config/backends.json`` are
code that ggufpack runs (``backends list`` probes the tools, ``--backend`` runs them). Whoever can
write any of those files, or a directory on the way to them, could make ggufpack run their code as
the user. So, as ssh's ``StrictModes`` does for ``authorized_keys``, before a tool runs (and before
``backends.json`` is believed), the file and each directory from it up to a stopping point (the store
root for what lives in the store; the tool's own directory for a sideloaded tool), and the real
file and directory behind a symlink, must be owned by the current user or root and writable by no
one else. A group-writable one passes only when the group is the user's private group (its one
member is the user), as Debian's OpenSSH allows.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from functools import cache
from pathlib import Path

from ..errors import GGUFPackError


@cache
def _private_group(gid: int, uid: int) -> bool:
    """Is ``gid`` a group whose one member (by primary group or by the member list) is ``uid``?"""
    try:
        group = grp.getgrgid(gid)
        user = pwd.getpwuid(uid).pw_name
        primary = [p.pw_uid for p in pwd.getpwall() if p.pw_gid == gid]
    except KeyError:
        return False
    members = set(group.gr_mem) | {pwd.getpwuid(u).pw_name for u in primary}
    return members == {user}


def _problem(path: Path, st: os.stat_result, uid: int) -> str | None:
    if st.st_uid not in (uid, 0):
        try:
            me = pwd.getpwuid(uid).pw_name
        except KeyError:
            me = str(uid)
        return f"{path} is owned by uid {st.st_uid}, neither you nor root: if you trust it, run: chown {me} {path}"
    if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and not _private_group(st.st_gid, uid)):
        who = "anyone" if st.st_mode & stat.S_IWOTH else f"group {st.st_gid}"
        return f"{path} is writable by {who}: run: chmod go-w {path}"
    return None


def untrusted(path: Path, up_to: Path | None = None) -> str | None:
    """Why ``path`` (a tool or a config file) must not be trusted, or None when it may be.

    Checked: ``path`` itself (followed when a symlink), each directory from its parent up to and including
    ``up_to`` (default: just its parent; ``up_to`` must be a parent of ``path``), and the directory that
    holds the real file behind a symlinked ``path``. A missing ``path`` is for the caller to report."""
    uid = os.geteuid()
    path = Path(os.path.abspath(path))
    stop = Path(os.path.abspath(up_to)) if up_to is not None else path.parent
    checked = [path, *[d for d in path.parents if d == stop or d.is_relative_to(stop)]]
    real = Path(os.path.realpath(path))
    if real != path:
        checked.append(real.parent)
    for entry in checked:
        try:
            st = entry.stat()
        except OSError as exc:
            return f"cannot check {entry}: {exc.strerror}"
        problem = _problem(entry, st, uid)
        if problem is not None:
            return problem
    return None


def check_trusted(path: Path, up_to: Path | None = None, what: str = "the tool") -> None:
    """Refuse (a :class:`GGUFPackError` naming the path and the fix) unless :func:`untrusted` finds nothing."""
    problem = untrusted(path, up_to)
    if problem is not None:
        raise GGUFPackError(f"refusing to use {what} {path}: {problem} (anyone who can change it could "
                            "run their code as you)")
