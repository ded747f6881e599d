"""``ADD <git url>``: check out one commit of a git repository with the ``git`` CLI.

A source is ``<url>[#<ref>[:<subdir>]]``. ``ref`` is a branch, a tag or a full or abbreviated
commit; empty means the remote's default branch. When the ref is named the same as both a tag and
a branch, the tag wins, as in ``git fetch``. ``subdir`` picks one directory of the checkout.

Git runs isolated from the machine's configuration (no system or global config, no prompts, ssh in
batch mode), so the same source gives the same tree everywhere; credentials therefore come from the
URL or an ssh agent, not from credential helpers. Submodules are checked out; Git LFS files are
fetched when the repository tracks any and ``git-lfs`` is installed (LFS files inside submodules are
not). Local repositories count as git sources only as ``file://`` URLs: a bare path such as
``weights.git`` stays a build-context path, as in Docker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.progress import Progress

_HEX = re.compile(r"[0-9a-fA-F]{4,64}")
_FULL_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
_GIT_PREFIXES = ("git@", "git://", "ssh://", "github.com/")
_KEPT_GIT_VARIABLES = ("GIT_SSH", "GIT_SSH_COMMAND")
_CONFIG = ("core.autocrlf=false", "core.symlinks=true", "init.defaultBranch=main", "advice.detachedHead=false",
           "protocol.version=2", "core.fsmonitor=false")

_LFS_FILTER = ("filter.lfs.clean=git-lfs clean -- %f", "filter.lfs.smudge=git-lfs smudge -- %f",
               "filter.lfs.process=git-lfs filter-process", "filter.lfs.required=true")


@dataclass(frozen=True)
class GitSource:
    """A parsed git source: the URL to fetch, the ref (``""`` = default branch), the subdirectory."""

    url: str
    ref: str
    subdir: str


@dataclass(frozen=True)
class GitResult:
    """Where the checkout was placed and the full commit it holds."""

    path: Path
    commit: str


def is_git_source(src: str) -> bool:
    """Whether an ADD source names a git repository (Docker's rules, plus ``file://...git``)."""
    base = src.split("#", 1)[0]
    if base.startswith(_GIT_PREFIXES):
        return True
    parts = urllib.parse.urlsplit(base)
    return parts.scheme.lower() in ("http", "https", "file") and parts.path.rstrip("/").endswith(".git")


def parse_git_source(src: str) -> GitSource:
    """Split ``<url>#<ref>:<subdir>``; ``github.com/...`` becomes an https URL."""
    url, _, fragment = src.partition("#")
    ref, _, subdir = fragment.partition(":")
    if url.startswith("github.com/"):
        url = "https://" + url
    subdir = subdir.strip("/")
    if subdir:
        normal = os.path.normpath(subdir)
        if normal == ".." or normal.startswith("../") or os.path.isabs(normal):
            raise UsageError(f"bad git source {src!r}: the subdirectory after ':' must stay inside the repository")
        subdir = "" if normal == "." else normal
    if not url or url.startswith("-"):
        raise UsageError(f"bad git source {src!r}: expected a repository URL before '#'")
    if ref.startswith("-"):
        raise UsageError(f"bad git source {src!r}: a ref cannot start with '-'")
    return GitSource(url, ref, subdir)


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEPT_GIT_VARIABLES}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull,
               LC_ALL="C")
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


def _run(
    args: list[str], cwd: Path | None = None, extra_config: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    config = [arg for item in (*_CONFIG, *extra_config) for arg in ("-c", item)]
    try:
        return subprocess.run(
            ["git", *config, *args], cwd=cwd, env=_environment(), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, errors="replace", check=False,
        )
    except FileNotFoundError:
        raise GGUFPackError("ADD from a git repository needs the 'git' command; install git") from None


def _summary(stderr: str) -> str:
    """git's own error lines (``fatal:``/``error:``), else the last lines it printed."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("hint:")]
    errors = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return "; ".join(errors[:3] or lines[-3:]) or "git gave no reason"


def _check(result: subprocess.CompletedProcess[str], what: str, advice: str) -> str:
    if result.returncode != 0:
        raise GGUFPackError(f"{what} failed: {_summary(result.stderr)}; {advice}")
    return result.stdout


def _local_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme.lower() == "file"


def resolve_remote_ref(src: str) -> str | None:
    """The commit the source's ref names on the remote now, via ``git ls-remote`` (no clone).

    A full commit id is returned as is. ``None`` means an abbreviated commit id that names no
    branch or tag: only a fetch can expand it.
    """
    source = parse_git_source(src)
    if _FULL_SHA.fullmatch(source.ref):
        return source.ref.lower()
    pattern = source.ref or "HEAD"
    out = _check(_run(["ls-remote", "--", source.url, pattern, pattern + "^{}"]), f"git ls-remote {source.url}",
                 "check the repository URL and your access to it")
    refs = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    # git's own order for a short ref name; an annotated tag resolves to the commit it points to
    for name in (pattern, f"refs/{pattern}", f"refs/tags/{pattern}", f"refs/heads/{pattern}"):
        if name in refs:
            return refs.get(name + "^{}", refs[name])
    if _HEX.fullmatch(source.ref):
        return None
    raise GGUFPackError(f"git ref {source.ref!r} not found in {source.url}; check the branch, tag or commit "
                        "after '#'")


def clone(src: str, dest: Path, *, keep_git_dir: bool, progress: Progress) -> GitResult:
    """Check out ``src`` into the new directory ``dest`` (it must not exist, or be empty).

    Only the wanted commit is fetched (``--depth 1``) unless the ref is an abbreviated commit id,
    which needs the full history. ``.git`` directories (the repository's and its submodules') are
    removed unless ``keep_git_dir``, which cannot be combined with a subdirectory.
    """
    source = parse_git_source(src)
    if keep_git_dir and source.subdir:
        raise UsageError(f"--keep-git-dir cannot be combined with a subdirectory ('{source.subdir}') in {src!r}: "
                         "the .git directory lives at the repository root")
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"clone destination {dest} exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ggufpack-git-", dir=dest.parent))
    try:
        progress.log(f"fetching {source.url}" + (f" at {source.ref}" if source.ref else ""))
        commit = _checkout(source, work)
        if (work / ".gitmodules").exists():
            _submodules(source, work)
        if _uses_lfs(work):
            _lfs_pull(source, work)
        if not keep_git_dir:
            _remove_git_dirs(work)
        chosen = work / source.subdir if source.subdir else work
        if chosen.is_symlink() or not chosen.is_dir():
            raise GGUFPackError(f"subdirectory {source.subdir!r} not found in {source.url} at {commit[:12]}; "
                                "check the path after ':'")
        if dest.exists():
            dest.rmdir()
        os.replace(chosen, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return GitResult(dest, commit)


def _checkout(source: GitSource, work: Path) -> str:
    _check(_run(["init", "-q", "--template=", str(work)]), "git init", "check that the build directory is writable")
    _check(_run(["remote", "add", "--", "origin", source.url], cwd=work), "git remote add",
           "check the repository URL")
    ref = source.ref or "HEAD"
    fetched = _run(["fetch", "-q", "--depth", "1", "--no-tags", "--", "origin", ref], cwd=work)
    if fetched.returncode == 0:
        target = "FETCH_HEAD^{commit}"
    elif _HEX.fullmatch(ref):
        # An abbreviated id cannot be fetched by itself (nor a full one from servers that forbid it).
        _check(_run(["fetch", "-q", "--tags", "--", "origin", "+refs/heads/*:refs/remotes/origin/*"], cwd=work),
               f"git fetch {source.url}", "check the repository URL and your access to it")
        found = _run(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=work)
        if found.returncode != 0:
            raise GGUFPackError(f"git ref {ref!r} not found in {source.url}: no branch, tag or commit matches; "
                                "check the ref after '#'")
        target = found.stdout.strip()
    elif "couldn't find remote ref" in fetched.stderr:
        raise GGUFPackError(f"git ref {ref!r} not found in {source.url}: {_summary(fetched.stderr)}; "
                            "check the branch, tag or commit after '#'")
    else:
        raise GGUFPackError(f"cannot fetch {source.url}: {_summary(fetched.stderr)}; "
                            "check the repository URL and your access to it")
    _check(_run(["checkout", "-q", "--detach", target], cwd=work), f"git checkout {ref}",
           "the repository may hold paths this filesystem cannot store")
    return _check(_run(["rev-parse", "HEAD"], cwd=work), "git rev-parse", "this is a bug").strip()


def _submodules(source: GitSource, work: Path) -> None:
    # Local submodule URLs are refused by default (CVE-2022-39253); allow them only for a local superproject.
    config = ("protocol.file.allow=always",) if _local_url(source.url) else ()
    base = ["submodule", "update", "--init", "--recursive"]
    if _run([*base, "--depth", "1"], cwd=work, extra_config=config).returncode != 0:
        # The pinned commit may not be a branch tip, which some servers refuse to send alone.
        _check(_run(base, cwd=work, extra_config=config), f"git submodule update in {source.url}",
               "check that the submodule URLs are reachable")


def _uses_lfs(work: Path) -> bool:
    for directory, subdirs, files in os.walk(work):
        subdirs[:] = [d for d in subdirs if d != ".git"]
        if ".gitattributes" in files:
            text = Path(directory, ".gitattributes").read_text(encoding="utf-8", errors="replace")
            if "filter=lfs" in text:
                return True
    return False


def _lfs_pull(source: GitSource, work: Path) -> None:
    if _run(["lfs", "version"]).returncode != 0:
        raise GGUFPackError(f"{source.url} stores files with Git LFS, but git-lfs is not installed; install it "
                            "(apt-get install git-lfs, brew install git-lfs) and build again")
    # git-lfs checks files out only where its filter is configured; configure it for this command alone.
    _check(_run(["lfs", "pull"], cwd=work, extra_config=_LFS_FILTER), f"git lfs pull from {source.url}",
           "check that the LFS server is reachable and holds the files")


def _remove_git_dirs(work: Path) -> None:
    """Delete every ``.git`` (a submodule's is a file); git never tracks an entry of that name."""
    for directory, subdirs, files in os.walk(work):
        if ".git" in subdirs:
            subdirs.remove(".git")
            shutil.rmtree(Path(directory, ".git"))
        if ".git" in files:
            Path(directory, ".git").unlink()
