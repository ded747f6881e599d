"""The frontend image, built offline with a local Docker daemon: a debootstrap base (:mod:`.base`), the
wheels it needs unpacked into a site directory, and ggufpack's own sources.

Wheels: ``grpcio``/``protobuf`` (the gateway) and ggufpack's runtime packages (numpy, gguf, llama-cpp-python
and theirs) **at the versions installed on this machine**, so the converter and the quantizer in the image
are the ones a local build runs and write the same bytes. They are downloaded once for CPython 3.11
manylinux (the base's Python); llama-cpp-python, which has no manylinux wheel on PyPI, is taken from pip's
local wheel cache (the wheel pip built when it installed it here; ``py3-none-linux_x86_64``, linked against
glibc <= 2.34 and GLIBCXX 3.4.29, which bookworm's libc6 2.36 and libstdc++6 (gcc 12) provide; it needs
libgomp1, which the base includes).

No ``RUN`` step: the Python packages are unpacked on the host (wheels are zip files), so the build needs
neither network nor a working container network in the daemon, and it is a pure function of its inputs.
:func:`frontend_key` hashes all of them (base key, wheel bytes, sources, Dockerfile); the image is tagged
with it, and saved under the cache directory so a later run (a fresh daemon) only ``docker load``s it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from .base import BaseSpec, build_base_tar, cache_dir, default_spec, import_base

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # ggufpack/
WHEEL_REQUIREMENTS = ("grpcio", "protobuf")
#: ggufpack's runtime packages in the image (convert, quantize, plan, gguf_info), pinned to this machine's
RUNTIME_PACKAGES = ("numpy", "gguf", "pyyaml", "tqdm", "requests", "urllib3", "idna", "charset-normalizer",
                    "certifi", "diskcache", "jinja2", "markupsafe", "typing-extensions")
LLAMA_CPP = "llama-cpp-python"
TARGET_TAGS = ("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
               "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64")

#: bookworm has glibc 2.36: newer manylinux tags than grpcio's fit too (numpy 2.4 ships manylinux_2_27/2_28 only)
RUNTIME_TAGS = (*TARGET_TAGS, *(x for tag in ("manylinux_2_28_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64")
                                for x in ("--platform", tag)))

DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY site/ /opt/ggufpack/site/
COPY app/ /opt/ggufpack/app/
ENV PYTHONPATH=/opt/ggufpack/site:/opt/ggufpack/app PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
LABEL moby.buildkit.frontend.network.none="true"
ENTRYPOINT ENTRY_ARGV
"""


def wheels(dest: Path | None = None, requirements: Sequence[str] = WHEEL_REQUIREMENTS) -> list[Path]:
    """Wheels of ``requirements`` for the base's Python (CPython 3.11, manylinux x86_64), downloaded by pip on
    this host once (pip's own HTTP cache makes repeats offline) into ``dest``."""
    dest = dest or cache_dir() / "frontend-wheels"
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob("*.whl"))
    names = {p.name.split("-")[0].lower().replace("_", "-") for p in found}
    if not all(r.lower() in names for r in requirements):
        subprocess.run(["python3", "-m", "pip", "download", "--quiet", *TARGET_TAGS, "-d", str(dest), *requirements],
                       check=True)
        found = sorted(dest.glob("*.whl"))
    return found


def _installed_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def runtime_wheels(dest: Path | None = None) -> list[Path]:
    """Wheels of :data:`RUNTIME_PACKAGES` at this machine's versions (no dependency resolution: the list is
    the closure) plus llama-cpp-python's from pip's wheel cache."""
    dest = dest or cache_dir() / "frontend-wheels"
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={_installed_version(name)}" for name in RUNTIME_PACKAGES]

    def have(pin: str) -> bool:
        name, _, version = pin.partition("==")
        stem = name.lower().replace("-", "_")
        return any(p.name.lower().startswith(f"{stem}-{version}-") for p in dest.glob("*.whl"))

    missing = [pin for pin in pins if not have(pin)]
    if missing:
        subprocess.run(["python3", "-m", "pip", "download", "--quiet", "--no-deps", *RUNTIME_TAGS, "-d", str(dest),
                        *missing], check=True)
    found = [p for pin in pins for p in sorted(dest.glob("*.whl")) if p.name.lower().startswith(
        f"{pin.partition('==')[0].lower().replace('-', '_')}-{pin.partition('==')[2]}-")]
    return [*found, llama_cpp_wheel()]


def llama_cpp_wheel() -> Path:
    """The llama-cpp-python wheel of the installed version from pip's local wheel cache."""
    version = _installed_version(LLAMA_CPP)
    roots = [Path(os.path.expanduser("~/.cache/pip/wheels"))]
    out = subprocess.run(["python3", "-m", "pip", "cache", "dir"], capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        roots.insert(0, Path(out.stdout.strip()) / "wheels")
    for root in roots:
        found = sorted(root.rglob(f"llama_cpp_python-{version}-*.whl")) if root.is_dir() else []
        if found:
            return found[0]
    raise RuntimeError(f"no llama_cpp_python-{version} wheel in pip's cache ({', '.join(map(str, roots))}): "
                       f"pip install --force-reinstall llama-cpp-python=={version} builds one")


def _sources(full: bool = False) -> list[Path]:
    if full:
        return sorted(p for p in PACKAGE_ROOT.rglob("*.py") if "__pycache__" not in p.parts)
    files = [PACKAGE_ROOT / "__init__.py", PACKAGE_ROOT / "version.py"]
    files += sorted((PACKAGE_ROOT / "frontend").glob("*.py"))
    return files


def _full(entry_module: str) -> bool:
    """The real frontend (``ggufpack frontend serve``) needs all of ggufpack; the probe its own modules."""
    return not entry_module.startswith("ggufpack.frontend.probe")


def frontend_key(base: BaseSpec, wheel_files: Sequence[Path], entry_module: str) -> str:
    h = hashlib.sha256()
    h.update(f"base={base.key()}\nentry={entry_module}\n".encode())
    h.update(DOCKERFILE.encode())
    for path in sorted(wheel_files, key=lambda p: p.name):
        h.update(f"wheel={path.name}\n".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for path in _sources(_full(entry_module)):
        h.update(f"src={path.relative_to(PACKAGE_ROOT)}\n".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def prepare_context(ctx: Path, wheel_files: Sequence[Path], entry_module: str) -> Path:
    site = ctx / "site"
    site.mkdir(parents=True)
    for wheel in wheel_files:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    app = ctx / "app" / "ggufpack"
    for path in _sources(_full(entry_module)):
        target = app / path.relative_to(PACKAGE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    argv = ["python3", "-m", *entry_module.split()]
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("ENTRY_ARGV", json.dumps(argv)), encoding="utf-8")
    return ctx


def _image_exists(docker: list[str], ref: str, env: dict[str, str] | None) -> bool:
    return subprocess.run([*docker, "image", "inspect", ref], capture_output=True, env=env).returncode == 0


def ensure_frontend_image(docker: list[str], *, name: str = "ggufpack-frontend", entry_module: str,
                          base: BaseSpec | None = None, env: dict[str, str] | None = None,
                          save_cache: bool = True) -> tuple[str, dict[str, float]]:
    """The frontend image's local tag (``name:<key>``) in the daemon ``docker`` talks to: already there,
    loaded from the cache directory, or built (base made or loaded first). Returns it and the times spent."""
    base = base or default_spec()
    wheel_files = wheels() + (runtime_wheels() if _full(entry_module) else [])
    key = frontend_key(base, wheel_files, entry_module)
    ref = f"{name}:{key}"
    times: dict[str, float] = {}
    if _image_exists(docker, ref, env):
        return ref, times
    saved = cache_dir() / f"frontend-image-{key}.tar"
    if saved.exists():
        t0 = time.monotonic()
        subprocess.run([*docker, "load", "-i", str(saved)], check=True, capture_output=True, env=env)
        times["load_s"] = time.monotonic() - t0
        return ref, times
    base_ref = f"ggufpack-frontend-base:{base.key()}"
    if not _image_exists(docker, base_ref, env):
        tar, base_times = build_base_tar(base)
        times.update(base_times)
        _, times["import_s"] = import_base(tar, base_ref, docker)
    with tempfile.TemporaryDirectory(prefix="ggufpack-frontend-ctx-") as tmp:
        ctx = prepare_context(Path(tmp), wheel_files, entry_module)
        t0 = time.monotonic()
        build_env = dict(env or {}) if env is not None else None
        out = subprocess.run([*docker, "build", "--build-arg", f"BASE={base_ref}", "-t", ref, str(ctx)],
                             capture_output=True, text=True, env=build_env)
        if out.returncode != 0:
            raise RuntimeError(f"building the frontend image failed:\n{out.stdout}\n{out.stderr}")
        times["build_s"] = time.monotonic() - t0
    if save_cache:
        t0 = time.monotonic()
        partial = saved.with_suffix(".tar.partial")
        subprocess.run([*docker, "save", "-o", str(partial), ref], check=True, capture_output=True, env=env)
        partial.replace(saved)
        times["save_s"] = time.monotonic() - t0
    return ref, times
