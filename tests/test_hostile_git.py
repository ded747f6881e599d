"""Hostile git sources: repositories built to escape the checkout, exhaust memory or hang the build.

Every case runs in a forked child under an address-space cap and a deadline
(:mod:`tests.helpers.bounded`); only our own errors may come out, and nothing outside the build's
scratch directory may change. Repositories are written with git's plumbing
(:func:`tests.helpers.gitrepo.make_tree_repo`), so they hold what ``git add`` would refuse.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.progress import Progress
from ggufpack.sources import git as gitsource
from ggufpack.sources.git import clone, resolve_remote_ref
from ggufpack.store import Store
from tests.helpers.bounded import assert_clean, assert_refused, run_bounded
from tests.helpers.builds import do_build, tiny_gguf_bytes, write_context
from tests.helpers.gitrepo import Gitlink, Link, TreeEntry, make_tree_repo

QUIET = Progress("quiet")
SECRET = b"host secret\n"


def host_tree(root: Path) -> dict[str, tuple[str, bytes | str]]:
    """Everything below ``root``, without following links: relpath -> (kind, content or link target)."""
    found: dict[str, tuple[str, bytes | str]] = {}
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            path = Path(directory, name)
            rel = str(path.relative_to(root))
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(mode):
                found[rel] = ("dir", b"")
            elif stat.S_ISREG(mode):
                found[rel] = ("file", path.read_bytes())
            else:
                found[rel] = ("special", b"")
    return found


@dataclass(frozen=True)
class Host:
    """Files of "the host" a hostile repository aims at: a directory, a file and a FIFO outside it."""

    root: Path

    @property
    def directory(self) -> Path:
        return self.root / "outside"

    @property
    def file(self) -> Path:
        return self.root / "outside-file"

    @property
    def fifo(self) -> Path:
        return self.root / "fifo"


@contextmanager
def host() -> Iterator[Host]:
    root = Path(tempfile.mkdtemp(prefix="hostile-git-host-"))
    try:
        h = Host(root)
        (h.directory / "precious").mkdir(parents=True)
        (h.directory / "precious" / "s.txt").write_bytes(SECRET)
        h.file.write_bytes(SECRET)
        os.mkfifo(h.fifo)
        yield h
    finally:
        shutil.rmtree(root)


def clone_into(src: str, dest: Path, keep_git_dir: bool = False) -> list[str]:
    """Clone and list the result (runs in the bounded child)."""
    result = clone(src, dest, keep_git_dir=keep_git_dir, progress=QUIET)
    return sorted(host_tree(result.path))


def assert_checkout_confined(dest: Path) -> None:
    """Nothing in the checkout is host data: files are regular and none holds the host's secret."""
    for rel, (kind, content) in host_tree(dest).items():
        assert kind in ("file", "dir", "link"), rel
        assert content != SECRET, f"{rel} holds the host's file"


# -- found: item 1 (subdir escapes the checkout through a symlink) --------------------------------------


def test_item01_git_subdir_through_symlinked_parent_is_refused_and_host_untouched(tmp_path: Path) -> None:
    with host() as h:
        before = host_tree(h.root)
        repo = make_tree_repo(tmp_path, {"README.md": b"hi\n", "lnk": Link(str(h.directory))})
        dest = tmp_path / "build" / "git"
        outcome = run_bounded(clone_into, f"{repo.url}#main:lnk/precious", dest, seconds=60)
        assert_refused(outcome, "'lnk/precious'", "leads outside the repository", "'lnk' -> ")
        assert host_tree(h.root) == before  # the outside directory is still there, untouched
        assert list((tmp_path / "build").iterdir()) == []  # and the scratch checkout is gone


def test_item01_build_add_git_subdir_through_symlink_keeps_host_files(tmp_path: Path) -> None:
    """The whole path of the report: a real build of ``ADD <repo>#main:lnk/precious /stolen/``."""
    with host() as h:
        before = host_tree(h.root)
        repo = make_tree_repo(tmp_path / "git", {"lnk": Link(str(h.directory))})
        context = write_context(
            tmp_path / "ctx",
            f'FROM scratch\nCOPY m.gguf /m.gguf\nADD {repo.url}#main:lnk/precious /stolen/\nCMD ["-m", "/m.gguf"]\n',
            {"m.gguf": tiny_gguf_bytes(tmp_path / "gguf")},
        )
        with pytest.raises(GGUFPackError, match="leads outside the repository"):
            do_build(Store(tmp_path / "home"), context)
        assert host_tree(h.root) == before


@pytest.mark.parametrize(
    ("entries", "subdir", "message"),
    [
        # the subdirectory itself is a link out, absolute or climbing with '..'
        ({"lnk": Link("@DIR")}, "lnk", "leads outside the repository"),
        ({"a/up": Link("../../..")}, "a/up", "leads outside the repository"),
        ({"a/up": Link("../..")}, "a/up/tmp", "leads outside the repository"),
        # a leading '/' means the repository root, not the host's
        ({"lnk": Link("@DIR")}, "/lnk/precious", "leads outside the repository"),
        # a link to a file outside, and to a device
        ({"f": Link("@FILE")}, "f", "leads outside the repository"),
        ({"z": Link("/dev/zero")}, "z", "leads outside the repository"),
        # a link loop, a file, a missing path
        ({"a": Link("b"), "b": Link("a")}, "a", "not found"),
        ({"README.md": b"x"}, "README.md", "is a file, not a directory"),
        ({"README.md": b"x"}, "nope/deeper", "not found"),
    ],
)
def test_item01_git_subdir_variants_are_refused(
    tmp_path: Path, entries: dict[str, TreeEntry], subdir: str, message: str,
) -> None:
    with host() as h:
        before = host_tree(h.root)
        resolved = {k: Link(v.target.replace("@DIR", str(h.directory)).replace("@FILE", str(h.file)))
                    if isinstance(v, Link) else v for k, v in entries.items()}
        repo = make_tree_repo(tmp_path, resolved)
        dest = tmp_path / "build" / "git"
        assert_refused(run_bounded(clone_into, f"{repo.url}#main:{subdir}", dest, seconds=60), message)
        assert host_tree(h.root) == before
        assert not dest.exists()


def test_item01_git_subdir_dotdot_is_a_usage_error(tmp_path: Path) -> None:
    repo = make_tree_repo(tmp_path, {"a/b": b"x"})
    with pytest.raises(UsageError, match="must stay inside the repository"):
        clone(f"{repo.url}#main:a/../../x", tmp_path / "out", keep_git_dir=False, progress=QUIET)


def test_item01_git_subdir_through_a_link_inside_the_checkout_is_followed(tmp_path: Path) -> None:
    """The build context's rule: a link that stays inside is followed, as for ``COPY``."""
    repo = make_tree_repo(tmp_path, {"v2/config.json": b"{}\n", "latest": Link("v2"), "v2/self": Link(".")})
    for subdir in ("latest", "latest/self", "v2/self"):
        dest = tmp_path / f"out-{subdir.replace('/', '-')}"
        result = clone(f"{repo.url}#main:{subdir}", dest, keep_git_dir=False, progress=QUIET)
        assert (result.path / "config.json").read_bytes() == b"{}\n"
        assert not result.path.is_symlink()


# -- found: item 2 (.gitattributes that is not a regular file) ----------------------------------------


def test_item02_gitattributes_symlink_to_dev_zero_is_bounded(tmp_path: Path) -> None:
    repo = make_tree_repo(tmp_path, {"README.md": b"hi\n", "sub/.gitattributes": Link("/dev/zero")})
    outcome = assert_clean(run_bounded(clone_into, repo.url, tmp_path / "out", budget_mb=256, seconds=60))
    assert outcome.kind == "ok" and "sub/.gitattributes" in outcome.value
    assert os.readlink(tmp_path / "out" / "sub" / ".gitattributes") == "/dev/zero"  # kept as a link


def test_item02_gitattributes_fifo_does_not_hang(tmp_path: Path) -> None:
    with host() as h:
        repo = make_tree_repo(tmp_path, {"README.md": b"hi\n", ".gitattributes": Link(str(h.fifo))})
        outcome = run_bounded(clone_into, repo.url, tmp_path / "out", seconds=30)
        assert outcome.kind == "ok", str(outcome)


def test_item02_gitattributes_are_still_read_when_regular(tmp_path: Path) -> None:
    """The bounded reader still finds the LFS filter, also across its read chunks."""
    pad = b"#" * ((1 << 20) - 4)
    path = tmp_path / ".gitattributes"
    path.write_bytes(pad + b"*.bin filter=lfs\n")
    assert gitsource._mentions_lfs(path)
    path.write_bytes(pad + b"*.bin -text\n")
    assert not gitsource._mentions_lfs(path)


# -- siblings ------------------------------------------------------------------------------------------


def test_sibling_git_stderr_flood_from_the_server_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server may print without end (``remote:`` lines); git passes it on, and we keep only a tail."""
    ssh = tmp_path / "flood-ssh"
    ssh.write_text("#!/bin/sh\nhead -c 400000000 /dev/zero | tr '\\0' x >&2\n"
                   "echo >&2\necho 'fatal: flooded' >&2\nexit 1\n")
    ssh.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(ssh))
    outcome = run_bounded(resolve_remote_ref, "ssh://example.invalid/repo.git#main", budget_mb=256, seconds=120)
    assert_refused(outcome, "git ls-remote", "fatal: flooded")
    assert len(outcome.message) < 200_000


def test_sibling_git_stdout_flood_is_bounded(tmp_path: Path) -> None:
    repo = make_tree_repo(tmp_path, {"big": os.urandom(1 << 20) * 17})  # more than git's stdout allowance
    blob = gitsource._run(["rev-parse", "main:big"], cwd=repo.bare).stdout.strip()
    outcome = run_bounded(gitsource._run, ["cat-file", "blob", blob], cwd=repo.bare, budget_mb=256, seconds=60)
    assert_refused(outcome, "printed more than 16 MiB")


@pytest.mark.parametrize("src", ["file:///r.git\0#main", "file:///r.git#ma\0in", "file:///r.git#main:a\0b"])
def test_sibling_git_source_with_nul_is_a_usage_error(tmp_path: Path, src: str) -> None:
    assert_refused(run_bounded(resolve_remote_ref, src, seconds=30), "NUL")
    assert_refused(run_bounded(clone_into, src, tmp_path / "out", seconds=30), "NUL")


def test_sibling_remove_git_dirs_unlinks_a_git_symlink_not_its_target(tmp_path: Path) -> None:
    """Git never checks out a ``.git`` link, but the removal must not depend on that."""
    with host() as h:
        before = host_tree(h.root)
        work = tmp_path / "work"
        (work / "sub").mkdir(parents=True)
        (work / "sub" / ".git").symlink_to(h.directory)
        (work / ".git").mkdir()
        (work / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (work / "mod").mkdir()
        (work / "mod" / ".git").write_text("gitdir: ../.git/modules/mod\n")
        gitsource._remove_git_dirs(work)
        assert sorted(host_tree(work)) == ["mod", "sub"]
        assert host_tree(h.root) == before


@pytest.mark.parametrize(
    "entries",
    [
        {".gitmodules": Link("/dev/zero")},  # git refuses a symlinked .gitmodules
        {".git/config": b"[core]\n\thooksPath = /tmp\n"},  # and a committed .git
        {"sub/.git": Link("@DIR")},
        {"a/.GIT": Link("@DIR")},
        {".gitmodules": b'[submodule "../../x"]\n\tpath = m\n\turl = @URL\n', "m": "gitlink"},
        {".gitmodules": b'[submodule "m"]\n\tpath = m\n\turl = --upload-pack=touch @DIR/pwned\n', "m": "gitlink"},
        {".gitmodules": b'[submodule "m"]\n\tpath = m\n\turl = ext::sh -c touch% @DIR/pwned\n', "m": "gitlink"},
        {".gitmodules": b"\xff\xfe[\0", "m": b"x"},
        {".lfsconfig": b"[lfs]\n\turl = file:///nonexistent\n", ".gitattributes": b"*.bin filter=lfs\n",
         "w.bin": b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 5\n"},
    ],
)
def test_hostile_repository_layouts_are_clean(tmp_path: Path, entries: dict[str, object]) -> None:
    """Layouts git itself guards against: whatever git decides, only our errors come out, the host stays."""
    with host() as h:
        sub = make_tree_repo(tmp_path / "sub", {"README.md": b"sub\n"})
        resolved: dict[str, TreeEntry] = {}
        for path, entry in entries.items():
            if entry == "gitlink":
                resolved[path] = Gitlink(sub.commits["main"])
            elif isinstance(entry, Link):
                resolved[path] = Link(entry.target.replace("@DIR", str(h.directory)))
            else:
                assert isinstance(entry, bytes)
                resolved[path] = entry.replace(b"@DIR", str(h.directory).encode()).replace(b"@URL", sub.url.encode())
        before = host_tree(h.root)
        repo = make_tree_repo(tmp_path / "top", resolved)
        outcome = assert_clean(run_bounded(clone_into, repo.url, tmp_path / "out", seconds=60))
        assert host_tree(h.root) == before
        if outcome.kind == "ok":
            assert_checkout_confined(tmp_path / "out")


# -- property-based: random trees of files, directories and links, random subdir selectors -------------

NAMES = st.sampled_from(["a", "b", "c", ".gitattributes", "..a", "x y"])
LINK_TARGETS = st.sampled_from([
    "a", "b/c", ".", "..", "../a", "../..", "../../..", "../../../../../../..", "a/../..",
    "@DIR", "@DIR/precious", "@FILE", "@FIFO", "/dev/zero", "/dev/null", "/nonexistent", "/", "/etc",
])
CONTENTS = st.sampled_from([b"", b"x\n", b"* filter=lfs diff=lfs merge=lfs -text\n", b"* text=auto\n"])
TREES = st.recursive(
    st.one_of(CONTENTS, LINK_TARGETS.map(Link)),
    lambda children: st.dictionaries(NAMES, children, min_size=1, max_size=3),
    max_leaves=8,
)
SUBDIRS = st.lists(st.sampled_from(["a", "b", "c", "..a", ".", "x y", "precious"]), max_size=4).map("/".join)


def _flatten(tree: dict[str, object], prefix: str = "") -> Iterator[tuple[str, object]]:
    for name, child in tree.items():
        if isinstance(child, dict):
            yield from _flatten(child, prefix + name + "/")
        else:
            yield prefix + name, child


def _bind(entry: object, h: Host) -> TreeEntry:
    if isinstance(entry, Link):
        target = entry.target
        for token, path in (("@DIR", h.directory), ("@FILE", h.file), ("@FIFO", h.fifo)):
            target = target.replace(token, str(path))
        return Link(target)
    assert isinstance(entry, bytes)
    return entry


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(NAMES, TREES, min_size=1, max_size=4), subdir=SUBDIRS, lead=st.sampled_from(["", "/"]),
       keep_git_dir=st.booleans())
def test_random_trees_and_subdirs_stay_confined(
    tree: dict[str, object], subdir: str, lead: str, keep_git_dir: bool,
) -> None:
    with host() as h, tempfile.TemporaryDirectory(prefix="hostile-git-") as scratch:
        before = host_tree(h.root)
        root = Path(scratch)
        repo = make_tree_repo(root / "repo", {path: _bind(entry, h) for path, entry in _flatten(tree)})
        dest = root / "build" / "git"
        selector = f"#main:{lead}{subdir}" if subdir or lead else "#main"
        outcome = assert_clean(run_bounded(clone_into, repo.url + selector, dest, keep_git_dir, budget_mb=512,
                                           seconds=60))
        assert host_tree(h.root) == before
        if outcome.kind == "ok":
            assert_checkout_confined(dest)
            assert sorted(p.name for p in (root / "build").iterdir()) == ["git"]
        else:
            assert not (root / "build").exists() or list((root / "build").iterdir()) == []
