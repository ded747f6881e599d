"""Local git repositories for tests: a bare repository reachable as a ``file://`` URL.

History of :func:`make_repo` (``main`` is the default branch)::

    c1  README.md="one", model/config.json
    c2  README.md="two"                      <- tag v1.0 (annotated)
    c3  dev.txt                              <- branch dev (from c2)
    c4  README.md="four"                     <- branch main (from c2)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Repo:
    """A bare repository and the commits of its history, by name."""

    bare: Path
    commits: dict[str, str]

    @property
    def url(self) -> str:
        return self.bare.as_uri()


def git_env() -> dict[str, str]:
    """A fixed identity and dates so commit ids are stable, and no user configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.com", GIT_AUTHOR_DATE="2024-01-01T00:00:00Z",
        GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="test@example.com",
        GIT_COMMITTER_DATE="2024-01-01T00:00:00Z", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull,
    )
    return env


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always", *args],
        cwd=cwd, env=git_env(), capture_output=True, text=True, check=True,
    )
    return result.stdout.strip()


def has_git_lfs() -> bool:
    return shutil.which("git-lfs") is not None


def _commit(work: Path, message: str, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def _publish(work: Path, bare: Path) -> None:
    git("init", "-q", "--bare", str(bare), cwd=work)
    git("remote", "add", "origin", bare.as_uri(), cwd=work)
    git("push", "-q", "origin", "--all", cwd=work)
    git("push", "-q", "origin", "--tags", cwd=work)


def make_repo(root: Path, *, lfs_file: bytes | None = None, submodule: Repo | None = None) -> Repo:
    """Create ``root/repo.git`` with the history above.

    ``lfs_file``: commit it as ``weights.bin`` tracked by Git LFS in c1 (needs git-lfs).
    ``submodule``: add that repository at ``vendor/sub`` in c1.
    """
    work = root / "work"
    work.mkdir(parents=True)
    git("init", "-q", cwd=work)
    c1_files = {"README.md": b"one\n", "model/config.json": b'{"a": 1}\n'}
    if lfs_file is not None:
        git("lfs", "install", "--local", cwd=work)
        git("lfs", "track", "*.bin", cwd=work)
        c1_files["weights.bin"] = lfs_file
    if submodule is not None:
        git("submodule", "add", "-q", submodule.url, "vendor/sub", cwd=work)
    commits = {"c1": _commit(work, "c1", c1_files), "c2": _commit(work, "c2", {"README.md": b"two\n"})}
    git("tag", "-a", "v1.0", "-m", "release 1.0", cwd=work)
    git("checkout", "-q", "-b", "dev", cwd=work)
    commits["c3"] = _commit(work, "c3", {"dev.txt": b"dev\n"})
    git("checkout", "-q", "main", cwd=work)
    commits["c4"] = _commit(work, "c4", {"README.md": b"four\n"})
    bare = root / "repo.git"
    _publish(work, bare)
    return Repo(bare, commits)


# -- hostile repositories, written with git's plumbing -------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A symlink entry of :func:`make_tree_repo`: git stores ``target`` as is (it need not exist)."""

    target: str


@dataclass(frozen=True)
class Gitlink:
    """A submodule entry of :func:`make_tree_repo`: the commit it pins (``.gitmodules`` says where from)."""

    commit: str


TreeEntry = bytes | Link | Gitlink


def _git_input(data: bytes, *args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=git_env(), input=data, capture_output=True, check=True)
    return result.stdout.decode().strip()


def _nest(entries: dict[str, TreeEntry]) -> dict[str, object]:
    root: dict[str, object] = {}
    for path, entry in entries.items():
        *parents, name = path.split("/")
        node = root
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{path!r}: {part!r} is both a directory and a file")
            node = child
        if name in node:
            raise ValueError(f"{path!r} given twice")
        node[name] = entry
    return root


def _write_tree(bare: Path, node: dict[str, object]) -> str:
    lines = []
    for name, entry in node.items():
        if isinstance(entry, dict):
            lines.append(f"040000 tree {_write_tree(bare, entry)}\t{name}")
        elif isinstance(entry, Gitlink):
            lines.append(f"160000 commit {entry.commit}\t{name}")
        else:
            data = entry.target.encode() if isinstance(entry, Link) else entry
            assert isinstance(data, bytes)
            blob = _git_input(data, "hash-object", "-w", "--stdin", cwd=bare)
            lines.append(f"{'120000' if isinstance(entry, Link) else '100644'} blob {blob}\t{name}")
    return _git_input("".join(line + "\0" for line in lines).encode(), "mktree", "-z", "--missing", cwd=bare)


def make_tree_repo(root: Path, entries: dict[str, TreeEntry], *, name: str = "tree.git") -> Repo:
    """A bare ``root/name`` whose branch ``main`` is one commit holding exactly ``entries``.

    ``entries`` maps slash-separated paths to file bytes, :class:`Link` or :class:`Gitlink`. The
    tree is written with ``mktree``, which skips the checks ``git add`` makes, so a test can commit
    what a hostile repository can: symlinked ``.gitmodules``, links to devices, ``.git`` entries.
    """
    bare = root / name
    root.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", str(bare), cwd=root)
    tree = _write_tree(bare, _nest(entries))
    commit = git("commit-tree", tree, "-m", "tree", cwd=bare)
    git("update-ref", "refs/heads/main", commit, cwd=bare)
    return Repo(bare, {"main": commit})
