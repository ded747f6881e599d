"""``ggufpack build --engine buildkit``: the same build through BuildKit, with ggufpack's frontend image.

Runs ``DOCKER_BUILDKIT=1 docker build --build-arg BUILDKIT_SYNTAX=<frontend image>`` (Debian's 20.10 CLI at
``/usr/bin/docker`` where it exists, else ``docker`` on PATH; ``$GGUFPACK_DOCKER`` overrides; ``DOCKER_HOST``
and the rest of the environment reach it unchanged). The built image is then either pushed
(``--push``: ``docker push`` of every -t that names a registry) or streamed out with ``docker save`` into
:func:`~ggufpack.image.archive.load_archive` and lands in the local store under the -t tags.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GGUFPackError, UsageError
from ..image.archive import LoadResult, load_archive
from ..refs import parse_reference
from ..store import Store

DEBIAN_DOCKER = "/usr/bin/docker"


def docker_binary() -> str:
    """The docker CLI to run: ``$GGUFPACK_DOCKER``, else Debian's 20.10 CLI (a newer one may demand buildx)."""
    chosen = os.environ.get("GGUFPACK_DOCKER")
    if chosen:
        return chosen
    if os.access(DEBIAN_DOCKER, os.X_OK):
        return DEBIAN_DOCKER
    found = shutil.which("docker")
    if found is None:
        raise GGUFPackError("--engine buildkit needs the docker CLI (and a daemon with BuildKit): none on PATH")
    return found


@dataclass
class BuildKitResult:
    refs: list[str] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)
    digest: str = ""


def _docker_progress(progress: str) -> str:
    return {"tty": "tty", "plain": "plain", "quiet": "plain"}.get(progress, "auto")


def build_on_buildkit(
    context: Path, *, file: Path, frontend_image: str, tags: Sequence[str], build_args: Mapping[str, str],
    labels: Mapping[str, str], target: str | None, platform: str | None, no_cache: bool, push: bool,
    progress: str, store: Store,
) -> BuildKitResult:
    """Build ``context`` on BuildKit; the image lands in ``store`` under ``tags`` (or is only pushed)."""
    if not frontend_image:
        raise UsageError("--engine buildkit needs --frontend-image REF (the ggufpack frontend image BuildKit runs)")
    for tag in tags:
        parse_reference(tag)  # our error before docker's
    docker = docker_binary()
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    temp_tag = f"ggufpack-buildkit-tmp:{os.getpid()}-{os.urandom(4).hex()}"
    argv = [docker, "build", f"--progress={_docker_progress(progress)}", "-f", str(file),
            "--build-arg", f"BUILDKIT_SYNTAX={frontend_image}", "-t", temp_tag]
    for name, value in build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    for name, value in labels.items():  # reach the frontend as label:NAME options, as --label does locally
        argv += ["--label", f"{name}={value}"]
    if target:
        argv += ["--target", target]
    if platform:
        argv += ["--platform", platform]
    if no_cache:
        argv.append("--no-cache")
    push_targets = [t for t in tags if parse_reference(t).registry is not None]
    if push and not push_targets:
        raise UsageError("--push needs a -t that names a registry (REGISTRY/NAME:TAG)")
    if not push and not tags:
        raise UsageError("--engine buildkit without --push needs -t NAME:TAG: the store keeps the image under it")
    argv.append(str(context))
    quiet = progress == "quiet"
    # docker's build output goes to our stderr (stdout is for the digest)
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE if quiet else 2, stderr=subprocess.STDOUT,
                          check=False)
    if proc.returncode != 0:
        detail = proc.stdout.decode("utf-8", "replace")[-4000:] if quiet and proc.stdout else ""
        raise GGUFPackError(f"the BuildKit build failed (docker build exited with {proc.returncode})"
                            + (f":\n{detail}" if detail else "; its output is above"))
    result = BuildKitResult()
    try:
        if push:
            for tag in push_targets:
                docker_call(docker, env, "tag", temp_tag, tag)
                docker_call(docker, env, "push", tag)
                result.pushed.append(tag)
            return result
        loaded = _save_and_load(docker, env, temp_tag, list(tags), store)
        result.refs, result.digest = loaded.refs, loaded.digests[0]
        return result
    finally:
        subprocess.run([docker, "rmi", temp_tag], env=env, capture_output=True, check=False)


def docker_call(docker: str, env: Mapping[str, str], *args: str) -> None:
    """``docker ARGS...``, its failure our error."""
    proc = subprocess.run([docker, *args], env=dict(env), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GGUFPackError(f"docker {args[0]} {args[-1]} failed: {proc.stderr.strip()[-2000:]}")


def _save_and_load(docker: str, env: Mapping[str, str], image: str, tags: list[str], store: Store) -> LoadResult:
    """``docker save IMAGE`` streamed into the store (never a whole layer in memory, no temp archive)."""
    process = subprocess.Popen([docker, "save", image], env=dict(env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None
    try:
        loaded = load_archive(store, process.stdout, f"docker save {image}", tags=tags)
    except BaseException as exc:
        process.kill()
        process.wait()
        stderr = process.stderr.read().decode("utf-8", "replace").strip() if process.stderr else ""
        if stderr and isinstance(exc, GGUFPackError):
            raise GGUFPackError(f"{exc} (docker save said: {stderr[-2000:]})") from exc
        raise
    finally:
        process.stdout.close()
    stderr = process.stderr.read().decode("utf-8", "replace") if process.stderr else ""
    if process.wait() != 0:
        raise GGUFPackError(f"docker save {image} failed: {stderr.strip()[-2000:]}")
    return loaded
