"""The runtimes that can serve an image, and the exact command each one runs.

- ``llama-cpp-python``: its OpenAI-compatible server (the ``server`` extra), through
  :mod:`ggufpack.run.lcpp_server`; works wherever ggufpack is installed;
- ``llama-server``: the binary of a built or sideloaded llama.cpp backend (GPU builds included);
- ``docker``: llama.cpp's server image, with the store's runnable files mounted read-only, as
  gguf-packer runs one (``--gpus all`` when Docker has an nvidia runtime).

``auto`` is llama-cpp-python's server unless the CMD (or the extra arguments) needs what it cannot do
(:func:`ggufpack.options.default_runtime.cannot_honour`: several slots, a draft model...): then an
installed llama-server, with a note saying why; with none installed, the refusal names the options.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..backends import IN_PROCESS, META, Backend, list_backends, resolve_backend
from ..errors import GGUFPackError, UsageError
from ..options.default_runtime import CannotHonour, Refusal
from .cmdline import llama_cpp_python_args, llama_server_args, server_options
from .image import RunnableImage

DOCKER_IMAGE = "ghcr.io/ggml-org/llama.cpp:server"
DOCKER_IMAGE_CUDA = "ghcr.io/ggml-org/llama.cpp:server-cuda"
#: where the store's ``files/sha256`` directory appears inside the container
CONTAINER_FILES = "/ggufpack/files"
CONTAINER_PORT = 8080
LAUNCHER = "ggufpack.run.lcpp_server"
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
_SERVER_EXTRA_HINT = "install the server extra: pip install 'ggufpack[server]'"


@dataclass(frozen=True)
class Launch:
    """A server command, where it listens and how to tell it is ready."""

    runtime: str
    argv: list[str]
    host: str
    port: int
    health_path: str
    notes: list[str] = field(default_factory=list)
    #: run after the server process is gone (removes a container left by a killed ``docker run``)
    cleanup: list[str] | None = None
    #: added to the server's environment (the marker of a detached server, see :mod:`.detached`)
    environment: dict[str, str] = field(default_factory=dict)
    #: open files the server inherits: the lease that keeps its image's files in the store while it runs
    keep_fds: tuple[int, ...] = ()

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    @property
    def health_url(self) -> str:
        """The health endpoint, through loopback when the server listens on every address."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"{http_url(host, self.port)}{self.health_path}"


def http_url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def docker_container_name(image_digest: str, port: int) -> str:
    """The name of the container that serves ``image_digest`` on ``port`` (one at a time per port)."""
    return f"ggufpack-{image_digest.removeprefix('sha256:')[:12]}-{port}"


def docker_cleanup(container: str) -> list[str]:
    """The command that removes the container, should a killed ``docker run`` leave it behind."""
    return ["docker", "rm", "--force", container]


def server_extra_installed() -> bool:
    return all(importlib.util.find_spec(module) is not None for module in _SERVER_MODULES)


def _server_backends() -> list[Backend]:
    return [b for b in list_backends() if b.kind in ("built", "sideloaded") and "server" in b.capabilities]


def choose_runtime(runtime: str, backend: str | None, refusals: Sequence[Refusal] = ()) -> str:
    """``auto``: llama-server when ``--backend`` names a llama.cpp build; else llama-cpp-python when its
    server is installed and can honour the image's CMD (``refusals``: what it cannot, from
    :func:`default_runtime_refusals` or :func:`ggufpack.options.default_runtime.cannot_honour`); else a
    llama-server from any installed backend."""
    if runtime == "llama-cpp-python" and backend not in (None, IN_PROCESS):
        raise UsageError(f"--backend {backend} needs --runtime llama-server (llama-cpp-python is its own backend)")
    if runtime != "auto":
        return runtime
    if backend not in (None, IN_PROCESS):
        return "llama-server"
    if server_extra_installed() and not refusals:
        return "llama-cpp-python"
    if backend is None and _server_backends():
        return "llama-server"
    if refusals:
        listed = "; ".join(str(r) for r in refusals)
        raise GGUFPackError(f"llama-cpp-python's server cannot honour {listed}, and no llama.cpp backend with "
                            f"llama-server is installed: ggufpack backends install {META}")
    raise GGUFPackError(f"no server to run the image: {_SERVER_EXTRA_HINT}, or a llama.cpp backend "
                        f"(ggufpack backends install {META})")


def default_runtime_refusals(image: RunnableImage, extra: Sequence[str]) -> list[Refusal]:
    """What of the image's CMD and ``extra`` llama-cpp-python's server cannot honour (empty: it serves
    the image as llama-server would)."""
    try:
        llama_cpp_python_args(server_options(image, lambda path: path, extra))
    except CannotHonour as exc:
        return list(exc.refusals)
    return []


def llama_server_program(backend: str | None, dry_run: bool) -> str:
    """The llama-server binary of ``backend`` (default: the best built variant, else any backend with
    one); a dry run with none installed shows the bare name."""
    if backend is not None:
        return str(resolve_backend(backend, "server").tool("llama-server"))
    try:
        best = resolve_backend(META, "server")
    except GGUFPackError:
        found = _server_backends()
        if found:
            return str(found[0].tool("llama-server"))
        if dry_run:
            return "llama-server"
        raise GGUFPackError(f"no llama.cpp backend with llama-server is installed; run: ggufpack backends install "
                            f"{META}, or choose --runtime llama-cpp-python") from None
    return str(best.tool("llama-server"))  # a refusal to run it (trust.py) is said, not passed over


def docker_has_nvidia() -> bool:
    """Does Docker report an ``nvidia`` runtime (``docker info``)? False when Docker is absent or down."""
    try:
        out = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    try:
        runtimes = json.loads(out.stdout or "null")
    except ValueError:
        return False
    return out.returncode == 0 and isinstance(runtimes, dict) and "nvidia" in runtimes


def check_docker() -> None:
    """A clear error when ``docker`` is missing or its daemon does not answer."""
    try:
        out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                             timeout=30, check=False)
    except FileNotFoundError:
        raise GGUFPackError("docker is not installed; install it, or choose --runtime llama-cpp-python") from None
    except subprocess.TimeoutExpired:
        raise GGUFPackError("docker info did not answer in 30 s: is the Docker daemon healthy?") from None
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise GGUFPackError(f"docker cannot reach its daemon ({why}); start Docker, or choose another --runtime")


def llama_cpp_python_launch(image: RunnableImage, host: str, port: int, extra: list[str], dry_run: bool) -> Launch:
    if not dry_run and not server_extra_installed():
        raise GGUFPackError(f"llama-cpp-python's server is not installed: {_SERVER_EXTRA_HINT}")
    options = server_options(image, lambda path: str(image.host_path(path)), extra)
    args, notes = llama_cpp_python_args(options)
    argv = [sys.executable, "-m", LAUNCHER, *args, "--host", host, "--port", str(port)]
    return Launch("llama-cpp-python", argv, host, port, "/health", notes)


def llama_server_launch(image: RunnableImage, host: str, port: int, extra: list[str], *, backend: str | None,
                        dry_run: bool) -> Launch:
    program = llama_server_program(backend, dry_run)
    options = server_options(image, lambda path: str(image.host_path(path)), extra)
    argv = [program, *llama_server_args(options), "--host", host, "--port", str(port)]
    return Launch("llama-server", argv, host, port, "/health")


def docker_launch(image: RunnableImage, host: str, port: int, extra: list[str], *, docker_image: str | None,
                  dry_run: bool) -> Launch:
    if not dry_run:
        check_docker()

    def in_container(path: str) -> str:
        if image.split_model(path):
            raise GGUFPackError(f"{image.name}: the docker runtime cannot serve the split model {path} yet; "
                                "choose --runtime llama-cpp-python or llama-server")
        return f"{CONTAINER_FILES}/{image.digest_of(path).removeprefix('sha256:')}"

    options = server_options(image, in_container, extra)
    gpus = docker_has_nvidia()
    name = docker_container_name(image.digest, port)
    published = f"[{host}]" if ":" in host else host
    argv = [
        "docker", "run", "--rm", "--name", name, *(["--gpus", "all"] if gpus else []),
        "--publish", f"{published}:{port}:{CONTAINER_PORT}",
        "--volume", f"{image.store.layout.files}:{CONTAINER_FILES}:ro",
        docker_image or (DOCKER_IMAGE_CUDA if gpus else DOCKER_IMAGE),
        *llama_server_args(options), "--host", "0.0.0.0", "--port", str(CONTAINER_PORT),
    ]
    return Launch("docker", argv, host, port, "/health", cleanup=docker_cleanup(name))


def plan_launch(image: RunnableImage, runtime: str, *, host: str, port: int, extra: list[str],
                backend: str | None = None, docker_image: str | None = None, dry_run: bool = False) -> Launch:
    """The command that serves ``image`` with ``runtime`` (``auto`` resolved by :func:`choose_runtime`)."""
    refusals = default_runtime_refusals(image, extra) if runtime == "auto" and backend in (None, IN_PROCESS) else []
    chosen = choose_runtime(runtime, backend, refusals)
    if chosen == "llama-cpp-python":
        return llama_cpp_python_launch(image, host, port, extra, dry_run)
    if chosen == "llama-server":
        launch = llama_server_launch(image, host, port, extra, backend=backend, dry_run=dry_run)
        if refusals and backend is None:
            why = "; ".join(str(r) for r in refusals)
            launch = replace(launch, notes=[*launch.notes, f"runtime llama-server: llama-cpp-python's server "
                                                           f"cannot honour {why}"])
        return launch
    return docker_launch(image, host, port, extra, docker_image=docker_image, dry_run=dry_run)
