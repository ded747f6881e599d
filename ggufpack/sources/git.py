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

The repository is untrusted input. A ``subdir`` is resolved with every symlink along it followed, and
one that leads outside the checkout is refused (the build context's rule; BuildKit would re-root
it, which hides the mistake). Everything this module moves or deletes lies inside the scratch
directory it created, and is removed without following symlinks. Files of the checkout are read
only when they are regular files, and then in bounded pieces; git's own output is captured bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ggufpack.errors import NO_SPACE_ERRNOS, DiskFullError, GGUFPackError, UsageError
from ggufpack.progress import Progress

_HEX = re.compile(r"[0-9a-fA-F]{4,64}")
_FULL_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
_GIT_PREFIXES = ("git@", "git://", "ssh://", "github.com/")
_KEPT_GIT_VARIABLES = ("GIT_SSH", "GIT_SSH_COMMAND")
_CONFIG = ("core.autocrlf=false", "core.symlinks=true", "init.defaultBranch=main", "advice.detachedHead=false",
           "protocol.version=2", "core.fsmonitor=false", "protocol.ext.allow=never")
# git ignores a .gitattributes file larger than this (ATTR_MAX_FILE_SIZE), so reading more never matters
_MAX_ATTRIBUTES_SIZE = 100 << 20
_READ_CHUNK = 1 << 20
# what git may print before we stop listening: refs and ids on stdout, the last lines of stderr
_MAX_STDOUT = 16 << 20
_MAX_STDERR = 64 << 10

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
    if "\0" in src:
        raise UsageError(f"bad git source {src!r}: it holds a NUL character")
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
    """Run git; its output is kept bounded, since a hostile server decides how much of it there is.

    stdout (refs and ids) is kept whole up to ``_MAX_STDOUT``, past which git is stopped and the
    command fails; of stderr (``remote:`` lines come from the server) only the last ``_MAX_STDERR``.
    """
    config = [arg for item in (*_CONFIG, *extra_config) for arg in ("-c", item)]
    try:
        proc = subprocess.Popen(
            ["git", *config, *args], cwd=cwd, env=_environment(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise GGUFPackError("ADD from a git repository needs the 'git' command; install git") from None
    except OSError as exc:
        raise GGUFPackError(f"cannot run git: {exc.strerror}; check the build directory") from None
    with proc:
        assert proc.stdout is not None and proc.stderr is not None
        stderr: list[bytes] = []
        reader = threading.Thread(target=lambda: stderr.append(_tail(proc.stderr, _MAX_STDERR)), daemon=True)
        reader.start()
        stdout = proc.stdout.read(_MAX_STDOUT + 1)
        overflow = len(stdout) > _MAX_STDOUT
        if overflow:
            proc.kill()
        reader.join()
        returncode = proc.wait()
    err = b"".join(stderr).decode("utf-8", "replace")
    if overflow:
        raise GGUFPackError(f"git {args[0]} printed more than {_MAX_STDOUT >> 20} MiB; the repository or its "
                            "server is not one ggufpack can add")
    return subprocess.CompletedProcess(proc.args, returncode, stdout.decode("utf-8", "replace"), err)


def _tail(stream: IO[bytes], keep: int) -> bytes:
    """Read ``stream`` to its end and return its last ``keep`` bytes, holding at most twice that."""
    kept = bytearray()
    while chunk := stream.read(min(_READ_CHUNK, keep)):
        kept += chunk
        if len(kept) > 2 * keep:
            del kept[:-keep]
    return bytes(kept[-keep:])


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
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".ggufpack-git-", dir=dest.parent))
    except OSError as exc:
        raise _local_error(exc, dest.parent, source) from None
    try:
        progress.log(f"fetching {source.url}" + (f" at {source.ref}" if source.ref else ""))
        commit = _checkout(source, work)
        if _is_regular(work / ".gitmodules"):
            _submodules(source, work)
        if _uses_lfs(work):
            _lfs_pull(source, work)
        if not keep_git_dir:
            _remove_git_dirs(work)
        chosen = _chosen_directory(source, work, commit)
        if dest.exists():
            dest.rmdir()
        os.replace(chosen, dest)  # both in the build's own directory: the checkout leaves nothing else behind
    except OSError as exc:
        raise _local_error(exc, dest.parent, source) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # never follows symlinks: it removes links, not their targets
    return GitResult(dest, commit)


def _local_error(exc: OSError, directory: Path, source: GitSource) -> GGUFPackError:
    """What a failure of our own file operations (not git's) in the build directory means to the user."""
    if exc.errno in NO_SPACE_ERRNOS:
        return DiskFullError.from_os_error(exc, directory)
    return GGUFPackError(f"cannot check out {source.url} in {directory}: {exc.strerror or exc}; check the "
                         "permissions of the build directory")


def _chosen_directory(source: GitSource, work: Path, commit: str) -> Path:
    """The real directory ``source.subdir`` names in the checkout ``work``, always inside ``work``.

    Every component is resolved, symlinks followed (``a/b`` where ``a -> x`` is ``x/b``). A path whose
    real location leaves the checkout, through an absolute link or one climbing with ``..``, is refused
    before anything is moved: moving it would take (and the import then delete) a directory of the host.
    """
    root = Path(os.path.realpath(work))
    if not source.subdir:
        return root
    real = Path(os.path.realpath(root / source.subdir))
    where = f"{source.url} at {commit[:12]}"
    if real != root and root not in real.parents:
        link = _first_symlink(root, source.subdir)
        through = f" (through the symlink '{link[0]}' -> '{link[1]}')" if link else ""
        raise GGUFPackError(f"subdirectory {source.subdir!r} of {where} leads outside the repository{through}; "
                            "only directories inside the repository can be added: name the real path after ':'")
    try:
        mode = os.lstat(real).st_mode
    except OSError:
        mode = 0
    if stat.S_ISDIR(mode):
        return real
    if not mode or stat.S_ISLNK(mode):  # missing, or a link realpath could not resolve (a loop)
        raise GGUFPackError(f"subdirectory {source.subdir!r} not found in {where}; check the path after ':'")
    raise GGUFPackError(f"subdirectory {source.subdir!r} of {where} is a file, not a directory; name a "
                        "directory after ':' (ADD takes a whole repository or one of its directories)")


def _first_symlink(root: Path, subdir: str) -> tuple[str, str] | None:
    """The first component of ``subdir`` below ``root`` that is a symlink, and its target."""
    path = root
    for part in subdir.split("/"):
        path = path / part
        if path.is_symlink():
            return str(path.relative_to(root)), os.readlink(path)
    return None


def _is_regular(path: Path) -> bool:
    """Whether ``path`` itself (not what a symlink points to) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


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
    """Whether any ``.gitattributes`` of the checkout names the LFS filter."""
    for directory, subdirs, files in os.walk(work):
        subdirs[:] = [d for d in subdirs if d != ".git"]
        if ".gitattributes" in files and _mentions_lfs(Path(directory, ".gitattributes")):
            return True
    return False


def _mentions_lfs(path: Path) -> bool:
    """Whether the regular file ``path`` holds ``filter=lfs``, read in bounded chunks.

    A committed ``.gitattributes`` may be a symlink to ``/dev/zero`` or to a FIFO: git itself does
    not follow in-tree attribute files (and ignores ones over 100 MiB), so neither do we. The open
    never follows a link and never blocks, and only a regular file is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb", buffering=0) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_ATTRIBUTES_SIZE:
            return False
        needle = b"filter=lfs"
        carry = b""
        left = _MAX_ATTRIBUTES_SIZE
        while left > 0 and (chunk := f.read(min(_READ_CHUNK, left))):
            if needle in carry + chunk:
                return True
            carry = chunk[-(len(needle) - 1):]
            left -= len(chunk)
    return False


def _lfs_pull(source: GitSource, work: Path) -> None:
    if _run(["lfs", "version"]).returncode != 0:
        raise GGUFPackError(f"{source.url} stores files with Git LFS, but git-lfs is not installed; install it "
                            "(apt-get install git-lfs, brew install git-lfs) and build again")
    # git-lfs checks files out only where its filter is configured; configure it for this command alone.
    _check(_run(["lfs", "pull"], cwd=work, extra_config=_LFS_FILTER), f"git lfs pull from {source.url}",
           "check that the LFS server is reachable and holds the files")


def _remove_git_dirs(work: Path) -> None:
    """Delete every ``.git`` (a submodule's is a file); git never tracks an entry of that name.

    ``os.walk`` lists a symlink to a directory among the directories; whatever a ``.git`` is, only the
    entry itself goes (a link is unlinked, never its target; ``rmtree`` does not follow links below).
    """
    for directory, subdirs, files in os.walk(work):
        if ".git" in subdirs or ".git" in files:
            if ".git" in subdirs:
                subdirs.remove(".git")
            path = Path(directory, ".git")
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path)
            else:
                path.unlink()
