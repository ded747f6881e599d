"""ADD <git url>: real ``git`` against local bare repositories."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.progress import Progress
from ggufpack.sources.git import GitSource, clone, is_git_source, parse_git_source, resolve_remote_ref
from tests.helpers.gitrepo import Repo, has_git_lfs, make_repo

QUIET = Progress("quiet")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return make_repo(tmp_path_factory.mktemp("git"))


def files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if ".git" not in p.relative_to(path).parts)


@pytest.mark.parametrize(
    ("ref", "commit", "readme"),
    [("", "c4", "four"), ("main", "c4", "four"), ("dev", "c3", "two"), ("v1.0", "c2", "two")],
)
def test_clone_branch_tag_default(repo: Repo, tmp_path: Path, ref: str, commit: str, readme: str) -> None:
    src = f"{repo.url}#{ref}" if ref else repo.url
    result = clone(src, tmp_path / "out", keep_git_dir=False, progress=QUIET)
    assert result.commit == repo.commits[commit]
    assert result.path == tmp_path / "out"
    assert (result.path / "README.md").read_text() == f"{readme}\n"
    assert not (result.path / ".git").exists()
    assert resolve_remote_ref(src) == repo.commits[commit]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no work directory left behind


@pytest.mark.parametrize("length", [40, 7])
def test_clone_commit(repo: Repo, tmp_path: Path, length: int) -> None:
    sha = repo.commits["c1"][:length]
    result = clone(f"{repo.url}#{sha}", tmp_path / "out", keep_git_dir=False, progress=QUIET)
    assert result.commit == repo.commits["c1"]
    assert (result.path / "README.md").read_text() == "one\n"
    assert not (result.path / "dev.txt").exists()


def test_resolve_remote_ref_commits(repo: Repo) -> None:
    full = repo.commits["c1"]
    assert resolve_remote_ref(f"{repo.url}#{full.upper()}") == full
    assert resolve_remote_ref(f"{repo.url}#{full[:7]}") is None  # only a fetch can expand it
    with pytest.raises(GGUFPackError, match="git ref 'no-such-branch' not found"):
        resolve_remote_ref(f"{repo.url}#no-such-branch")


def test_clone_subdir(repo: Repo, tmp_path: Path) -> None:
    result = clone(f"{repo.url}#v1.0:model", tmp_path / "out", keep_git_dir=False, progress=QUIET)
    assert files(result.path) == ["config.json"]
    assert result.commit == repo.commits["c2"]
    with pytest.raises(GGUFPackError, match="subdirectory 'nope' not found"):
        clone(f"{repo.url}#main:nope", tmp_path / "out2", keep_git_dir=False, progress=QUIET)
    assert not (tmp_path / "out2").exists()


def test_keep_git_dir(repo: Repo, tmp_path: Path) -> None:
    result = clone(f"{repo.url}#dev", tmp_path / "out", keep_git_dir=True, progress=QUIET)
    assert (result.path / ".git" / "HEAD").is_file()
    assert files(result.path) == ["README.md", "dev.txt", "model", "model/config.json"]
    with pytest.raises(UsageError, match="--keep-git-dir cannot be combined"):
        clone(f"{repo.url}#dev:model", tmp_path / "out2", keep_git_dir=True, progress=QUIET)


def test_existing_empty_destination_is_used(repo: Repo, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert clone(repo.url, tmp_path / "out", keep_git_dir=False, progress=QUIET).path == tmp_path / "out"


def test_bad_ref(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(GGUFPackError, match=r"git ref 'nope' not found in file://.*couldn't find remote ref nope"):
        clone(f"{repo.url}#nope", tmp_path / "out", keep_git_dir=False, progress=QUIET)
    with pytest.raises(GGUFPackError, match="git ref 'deadbeef' not found"):
        clone(f"{repo.url}#deadbeef", tmp_path / "out", keep_git_dir=False, progress=QUIET)
    assert list(tmp_path.iterdir()) == []


def test_missing_repo(tmp_path: Path) -> None:
    url = (tmp_path / "missing.git").as_uri()
    with pytest.raises(GGUFPackError, match=r"cannot fetch file://.*does not appear to be a git repository"):
        clone(url, tmp_path / "out", keep_git_dir=False, progress=QUIET)
    with pytest.raises(GGUFPackError, match=r"git ls-remote .* failed"):
        resolve_remote_ref(url + "#main")


def test_user_git_environment_is_ignored(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path))
    result = clone(f"{repo.url}#main", tmp_path / "out", keep_git_dir=False, progress=QUIET)
    assert result.commit == repo.commits["c4"]


def test_submodules(tmp_path: Path) -> None:
    sub = make_repo(tmp_path / "sub")
    top = make_repo(tmp_path / "top", submodule=sub)
    result = clone(top.url, tmp_path / "out", keep_git_dir=False, progress=QUIET)
    assert (result.path / "vendor" / "sub" / "README.md").read_text() == "four\n"
    assert not (result.path / "vendor" / "sub" / ".git").exists()
    kept = clone(top.url, tmp_path / "kept", keep_git_dir=True, progress=QUIET)
    assert (kept.path / "vendor" / "sub" / ".git").is_file()


requires_lfs = pytest.mark.skipif(not has_git_lfs(), reason="git-lfs is not installed")


@requires_lfs
def test_lfs_files_are_pulled(tmp_path: Path) -> None:
    weights = os.urandom(5000)
    lfs_repo = make_repo(tmp_path / "lfs", lfs_file=weights)
    result = clone(f"{lfs_repo.url}#v1.0", tmp_path / "out", keep_git_dir=False, progress=QUIET)
    assert (result.path / "weights.bin").read_bytes() == weights


@requires_lfs
def test_lfs_without_git_lfs_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lfs_repo = make_repo(tmp_path / "lfs", lfs_file=b"w" * 100)
    bin_dir = tmp_path / "bin"  # a PATH that has git but not git-lfs
    bin_dir.mkdir()
    git_path = shutil.which("git")
    assert git_path is not None
    (bin_dir / "git").symlink_to(git_path)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(GGUFPackError, match="stores files with Git LFS, but git-lfs is not installed"):
        clone(lfs_repo.url, tmp_path / "out", keep_git_dir=False, progress=QUIET)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("git@github.com:org/repo.git", True),
        ("git@github.com:org/repo.git#main:models", True),
        ("git://example.com/repo", True),
        ("ssh://git@example.com/repo", True),
        ("github.com/org/repo", True),
        ("https://example.com/org/repo.git", True),
        ("https://example.com/org/repo.git#v1.0", True),
        ("file:///srv/repo.git#main", True),
        ("https://huggingface.co/org/model/resolve/main/model.gguf", False),
        ("https://example.com/repo.git.tar", False),
        ("weights.git", False),  # a context path, as in Docker
        ("models/", False),
    ],
)
def test_is_git_source(src: str, expected: bool) -> None:
    assert is_git_source(src) is expected


def test_parse_git_source() -> None:
    assert parse_git_source("git@h:o/r.git#v1:a/b/") == GitSource("git@h:o/r.git", "v1", "a/b")
    assert parse_git_source("github.com/o/r") == GitSource("https://github.com/o/r", "", "")
    assert parse_git_source("https://h/r.git#:sub") == GitSource("https://h/r.git", "", "sub")
    with pytest.raises(UsageError, match="must stay inside the repository"):
        parse_git_source("https://h/r.git#main:../x")
    with pytest.raises(UsageError, match="cannot start with '-'"):
        parse_git_source("file:///r.git#--upload-pack=touch /tmp/pwned")
