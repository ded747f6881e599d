"""``ggufpack backends install``: compile llama.cpp's tools into ``<home>/backends/<name>/``.

Only ``llama-quantize``, ``llama-imatrix`` and ``llama-server`` are built, as static executables
(``BUILD_SHARED_LIBS=OFF``), so the finished directory can be moved into place with one rename and
needs no rpath. Nothing is fetched at build time (no prebuilt web UI, no OpenSSL).

CPU optimisation: ``GGML_NATIVE`` stays ON (llama.cpp's default, and how pip built the in-process
llama-cpp-python from its sdist). It changes only the compute kernels of the ``ggml-cpu`` library
(matmuls: speed of IMATRIX and the server); the quantizers live in ``ggml-base``, which is compiled
without ``-march`` flags, so quantized bytes do not depend on it (the byte-identity test checks
built against in-process). ``--portable`` turns it off for a build meant to be copied to other
machines; the choice is recorded in ``metadata.json``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from ..errors import GGUFPackError, UsageError
from ..progress import QUIET, Progress
from ..util.locking import locked
from . import META, Backend
from .capability import GGML_FLAGS, TOOLCHAIN, accelerator_of, preferred_accelerators, variant_name
from .probe import TOOLS, probe
from .source import LlamaCppSource, check_tree, default_source
from .state import METADATA, backends_dir, read_json, write_json

TARGETS = tuple(TOOLS.values())
_COMMON_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)


def choose_variant(name: str) -> str:
    """The concrete variant ``name`` asks for: ``llama.cpp`` means the best one for this machine."""
    if name == META:
        from .detect import detect_device

        return variant_name(preferred_accelerators(detect_device())[0])
    if accelerator_of(name) is None:
        raise UsageError(
            f"cannot install {name!r}: choose llama.cpp (best for this machine), llama.cpp-cpu, "
            "llama.cpp-cuda, llama.cpp-rocm or llama.cpp-vulkan"
        )
    return name


def missing_toolchain(accelerator: str) -> list[str]:
    """The build programs for ``accelerator`` that are not on PATH."""
    missing = [tool for tool in ("cmake", *TOOLCHAIN[accelerator]) if shutil.which(tool) is None]
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        missing.append("a C compiler (gcc or clang)")
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler (g++ or clang++)")
    return missing


def build_flags(accelerator: str, portable: bool) -> list[str]:
    flags = [*_COMMON_FLAGS, *GGML_FLAGS[accelerator]]
    if portable:
        flags.append("-DGGML_NATIVE=OFF")
    return flags


def _reuse_or_reset(build: Path, source: LlamaCppSource, flags: list[str]) -> None:
    """Keep a build directory left by a failed attempt only if it was configured the same way."""
    stamp = build / "ggufpack-build.json"
    wanted = {"source": str(source.path), "flags": flags}
    if build.exists() and read_json(stamp) != wanted:
        shutil.rmtree(build)
    build.mkdir(exist_ok=True)
    write_json(stamp, wanted)


def _run_logged(argv: list[str], log: Path, env: dict[str, str], what: str) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise GGUFPackError(f"{what} failed (exit {code}); last lines of {log} (the build directory is kept: "
                            f"running install again resumes it):\n{tail}")


def _compile(source: LlamaCppSource, build: Path, flags: list[str], jobs: int, progress: Progress) -> Path:
    """Configure and build the three targets; the directory holding the executables."""
    log = build / "ggufpack-build.log"
    # a source tree without its own .git must not pick up the commit of a repository around it
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(source.path.parent)}
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    progress.log(f"configuring llama.cpp from {source.path}")
    _run_logged(["cmake", "-S", str(source.path), "-B", str(build), *generator, *flags], log, env, "cmake configure")
    progress.log(f"compiling {', '.join(TARGETS)} with {jobs} job(s) (this takes minutes)")
    _run_logged(["cmake", "--build", str(build), "--target", *TARGETS, "-j", str(jobs)], log, env, "cmake build")
    return build / "bin"


def _metadata(name: str, accelerator: str, final_bin: Path, source: LlamaCppSource, flags: list[str],
              portable: bool, staged_bin: Path) -> dict[str, object]:
    found = probe(staged_bin)
    if found.capabilities != frozenset(TOOLS):
        raise GGUFPackError("the freshly built tools do not run: " + "; ".join(found.problems))
    version = f"llama-cpp-python-{source.sdist_version}" if source.sdist_version else found.version
    return {
        "name": name, "kind": "built", "path": str(final_bin), "version": version, "accelerator": accelerator,
        "capabilities": sorted(found.capabilities),
        "llama_cpp": {"build_number": found.build_number, "commit": found.commit, "built_with": found.built_with,
                      "source": str(source.path), "llama_cpp_python_sdist": source.sdist_version},
        "build_flags": flags, "native": not portable,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def install(name: str, *, source: Path | None = None, jobs: int | None = None, force: bool = False,
            portable: bool = False, progress: Progress = QUIET, root: Path | None = None) -> Backend:
    """Build variant ``name`` (or the best one for ``llama.cpp``) and move it into the backends directory."""
    from .registry import backend_from_metadata

    variant = choose_variant(name)
    accelerator = accelerator_of(variant) or "cpu"
    missing = missing_toolchain(accelerator)
    if missing:
        hint = "" if accelerator == "cpu" else "; or install llama.cpp-cpu"
        raise GGUFPackError(f"cannot build {variant}: missing {', '.join(missing)} on PATH{hint}")
    target_root = backends_dir(root)
    final = target_root / variant
    if final.exists() and not force:
        raise GGUFPackError(f"{variant} is already installed in {final}; remove it first or pass --force")
    tree = check_tree(source) if source is not None else default_source()
    flags = build_flags(accelerator, portable)
    target_root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build = target_root / f".build-{variant}"  # kept when a step fails, so that the next attempt resumes it
    with locked(target_root / f".build-{variant}.lock"), \
            tempfile.TemporaryDirectory(prefix=f".install-{variant}-", dir=target_root) as temp_name:
        if final.exists() and not force:  # another install held the lock and finished: no build for nothing
            raise GGUFPackError(f"{variant} was installed in {final} while this install waited; --force replaces it")
        temp = Path(temp_name)
        _reuse_or_reset(build, tree, flags)
        built_bin = _compile(tree, build, flags, jobs or os.cpu_count() or 1, progress)
        staged = temp / variant
        (staged / "bin").mkdir(parents=True)
        for tool in TARGETS:
            shutil.copy2(built_bin / tool, staged / "bin" / tool)
        metadata = _metadata(variant, accelerator, final / "bin", tree, flags, portable, staged / "bin")
        metadata["build_seconds"] = round(time.monotonic() - started, 1)
        write_json(staged / METADATA, metadata)
        if final.exists():
            if not force:  # another install finished first
                raise GGUFPackError(f"{variant} was installed in {final} during this build; --force replaces it")
            os.rename(final, temp / "previous")
        os.rename(staged, final)
        shutil.rmtree(build)
    progress.log(f"installed {variant} in {final} ({metadata['build_seconds']} s)")
    return backend_from_metadata(metadata)
