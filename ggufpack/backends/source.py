"""The llama.cpp sources a built backend is compiled from.

By default they are the ones vendored in the source distribution of the *installed*
llama-cpp-python, so a built tool and the in-process library run the same llama.cpp code (and
quantize to the same bytes). The sdist is fetched once with pip into a cache directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from ..errors import GGUFPackError, UsageError

_SDIST_NAME = "llama_cpp_python"


@dataclass(frozen=True)
class LlamaCppSource:
    """A llama.cpp source tree and, when it came from a llama-cpp-python sdist, that sdist's version."""

    path: Path
    sdist_version: str | None


def installed_llama_cpp_python() -> str:
    import llama_cpp

    return str(llama_cpp.__version__)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ggufpack" / "sdist"


def _sdist_version(tree: Path) -> str | None:
    """The version in ``<sdist>/PKG-INFO`` when ``tree`` is an sdist's ``vendor/llama.cpp``."""
    pkg_info = tree.parent.parent / "PKG-INFO"
    if tree.parent.name != "vendor" or not pkg_info.is_file():
        return None
    headers = Parser().parsestr(pkg_info.read_text(encoding="utf-8", errors="replace"), headersonly=True)
    if (headers.get("Name") or "").replace("-", "_").lower() != _SDIST_NAME:
        return None
    return headers.get("Version")


def check_tree(path: Path) -> LlamaCppSource:
    """``path`` as a llama.cpp source tree (or an sdist holding one in ``vendor/llama.cpp``)."""
    path = path.expanduser().resolve()
    if (path / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        path = path / "vendor" / "llama.cpp"
    if not (path / "CMakeLists.txt").is_file() or not (path / "tools" / "quantize").is_dir():
        raise UsageError(
            f"{path} is not a llama.cpp source tree (no CMakeLists.txt and tools/quantize): pass the "
            "llama.cpp directory or an extracted llama-cpp-python sdist to --source"
        )
    return LlamaCppSource(path=path, sdist_version=_sdist_version(path))


def _download_sdist(version: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(into),
            f"llama-cpp-python=={version}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    archives = [p for p in (into / f"{_SDIST_NAME}-{version}.tar.gz", into / f"llama-cpp-python-{version}.tar.gz")
                if p.is_file()]
    if done.returncode != 0 or not archives:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise GGUFPackError(
            f"could not download the llama-cpp-python {version} source distribution with pip:\n{tail}\n"
            "download and extract it yourself, then pass its vendor/llama.cpp directory with --source"
        )
    return archives[0]


def _extract(archive: Path, into: Path) -> Path:
    """Extract into a temp dir and rename it into place, so a half-extracted tree is never used."""
    top = archive.name.removesuffix(".tar.gz")
    final = into / top
    if final.is_dir():
        return final
    temp = into / f".{top}.extracting-{os.getpid()}"
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(temp, filter="data")
        try:
            os.replace(temp / top, final)
        except OSError:
            if not final.is_dir():  # else a concurrent install extracted it first
                raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise GGUFPackError(f"cannot extract {archive} ({exc}): delete it and run the command again") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


def default_source() -> LlamaCppSource:
    """The vendored llama.cpp of the installed llama-cpp-python's sdist (downloaded once, then cached)."""
    version = installed_llama_cpp_python()
    cache = cache_dir()
    extracted = cache / f"{_SDIST_NAME}-{version}"
    if not extracted.is_dir():
        archive = _download_sdist(version, cache)
        extracted = _extract(archive, cache)
    return check_tree(extracted)
