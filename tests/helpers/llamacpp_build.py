"""llama.cpp's CPU tools, built once by ``ggufpack backends install`` and kept across test runs.

The build takes minutes, so it lands in ``~/.cache/ggufpack-tests/llama.cpp-<version>-cpu`` (a
ggufpack home of its own) and is reused while that directory holds a finished backend. The
sources are the llama.cpp vendored in the installed llama-cpp-python's sdist, found locally
(``GGUFPACK_LLAMACPP_SOURCE``, the sdist cache of ``ggufpack backends install``, or
``/tmp/sdist``): tests never download.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import llama_cpp
import pytest

VERSION = llama_cpp.__version__
VARIANT = "llama.cpp-cpu"


def cache_root() -> Path:
    return Path(os.environ.get("GGUFPACK_TESTS_CACHE", Path.home() / ".cache" / "ggufpack-tests"))


def llamacpp_source() -> Path | None:
    """A local llama-cpp-python sdist (or llama.cpp tree) of the installed version, if there is one."""
    from ggufpack.backends.source import cache_dir

    explicit = os.environ.get("GGUFPACK_LLAMACPP_SOURCE")
    candidates = [Path(explicit)] if explicit else []
    candidates += [cache_dir() / f"llama_cpp_python-{VERSION}", Path("/tmp/sdist") / f"llama_cpp_python-{VERSION}"]
    return next((c for c in candidates if (c / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file()
                 or (c / "CMakeLists.txt").is_file()), None)


def build_available() -> bool:
    """Whether the CPU tools are cached or can be built here (local sources exist)."""
    cached = cache_root() / f"llama.cpp-{VERSION}-cpu" / "backends" / VARIANT / "metadata.json"
    return cached.is_file() or llamacpp_source() is not None


def built_cpu_home() -> Path:
    """A ggufpack home whose ``backends/llama.cpp-cpu`` holds the built tools (building them if needed)."""
    home = cache_root() / f"llama.cpp-{VERSION}-cpu"
    backend = home / "backends" / VARIANT
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs wait for one build
        if (backend / "metadata.json").is_file():
            return home
        source = llamacpp_source()
        if source is None:
            pytest.skip(f"no local llama-cpp-python {VERSION} sources to build llama.cpp from; "
                        "set GGUFPACK_LLAMACPP_SOURCE to an extracted sdist")
        argv = ["nice", "-n", "10", sys.executable, "-m", "ggufpack", "backends", "install", VARIANT,
                "--source", str(source), "--jobs", os.environ.get("GGUFPACK_TESTS_BUILD_JOBS", "2"),
                "--progress", "plain"]
        done = subprocess.run(argv, env={**os.environ, "GGUFPACK_HOME": str(home)}, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, f"building {VARIANT} failed:\n{done.stderr[-4000:]}"
    return home


def built_cpu_dir() -> Path:
    """The built backend's directory (``metadata.json`` and ``bin/``)."""
    return built_cpu_home() / "backends" / VARIANT


def install_into(home: Path) -> Path:
    """Make the cached build an installed backend of ``home`` (a symlink: nothing is copied)."""
    target = home / "backends" / VARIANT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(built_cpu_dir(), target_is_directory=True)
    return target


def _ftype(name: str) -> int:
    import gguf

    return int(gguf.LlamaFileType[f"MOSTLY_{name}"])


def inprocess_quantize(src: Path, dest: Path, qtype: str, *, pure: bool = False, leave_output_tensor: bool = False,
                       output_tensor_type: str | None = None, token_embedding_type: str | None = None,
                       threads: int = 2) -> None:
    """llama.cpp's ``llama_model_quantize`` in this process (through llama-cpp-python), as the reference."""
    import gguf

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _ftype(qtype)
    params.nthread = threads
    params.pure = pure
    params.quantize_output_tensor = not leave_output_tensor
    if output_tensor_type:
        params.output_tensor_type = int(gguf.GGMLQuantizationType[output_tensor_type])
    if token_embedding_type:
        params.token_embedding_type = int(gguf.GGMLQuantizationType[token_embedding_type])
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(), llama_cpp.byref(params)) == 0


def tool_quantize(tool: Path, src: Path, dest: Path, qtype: str, *, pure: bool = False,
                  output_tensor_type: str | None = None, token_embedding_type: str | None = None,
                  threads: int = 2) -> None:
    """The same through a ``llama-quantize`` executable."""
    flags = ["--pure"] if pure else []
    if output_tensor_type:
        flags += ["--output-tensor-type", output_tensor_type.lower()]
    if token_embedding_type:
        flags += ["--token-embedding-type", token_embedding_type.lower()]
    done = subprocess.run([str(tool), *flags, str(src), str(dest), qtype, str(threads)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
