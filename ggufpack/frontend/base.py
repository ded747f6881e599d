"""A Debian base rootfs for the frontend image, made without Docker Hub.

``debootstrap --variant=minbase`` from the Debian mirror apt is configured with, packed as a tar that
``docker import`` takes. The tar is cached under ``~/.cache/ggufpack`` (or ``GGUFPACK_CACHE``) keyed by
every input that changes its content (suite, mirror, package list, variant, debootstrap's version), so
CI machines that keep their home directory make it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SUITE = "bookworm"
#: libgomp1: llama.cpp (llama-cpp-python) links OpenMP; libstdc++6 comes with python3
DEFAULT_INCLUDE = ("python3", "python3-venv", "ca-certificates", "libgomp1")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def cache_dir() -> Path:
    root = os.environ.get("GGUFPACK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ggufpack")
    return Path(root)


def apt_mirror(suite: str = DEFAULT_SUITE, sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses for ``suite`` (one-line ``deb`` lists and deb822 ``.sources`` files)."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
                    return fields.get("uris", "").split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1]
    return DEFAULT_MIRROR


def debootstrap_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


@dataclass(frozen=True)
class BaseSpec:
    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    include: tuple[str, ...] = DEFAULT_INCLUDE
    variant: str = "minbase"

    def key(self) -> str:
        inputs = {"suite": self.suite, "mirror": self.mirror, "include": sorted(self.include),
                  "variant": self.variant, "debootstrap": debootstrap_version(), "format": 1}
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]

    def tar_path(self) -> Path:
        return cache_dir() / f"frontend-base-{self.key()}.tar"


def default_spec() -> BaseSpec:
    return BaseSpec(mirror=apt_mirror(DEFAULT_SUITE))


def build_base_tar(spec: BaseSpec | None = None, *, log=None) -> tuple[Path, dict[str, float]]:
    """The rootfs tar for ``spec``, made by debootstrap unless cached; returns it and the seconds spent."""
    spec = spec or default_spec()
    target = spec.tar_path()
    times: dict[str, float] = {}
    if target.exists():
        return target, times
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ggufpack-debootstrap-", dir=target.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        t0 = time.monotonic()
        subprocess.run(["debootstrap", f"--variant={spec.variant}", f"--include={','.join(spec.include)}",
                        spec.suite, str(rootfs), spec.mirror], check=True,
                       stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
        times["debootstrap_s"] = time.monotonic() - t0
        # apt lists and caches are not needed in the image
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for child in (rootfs / junk).glob("*"):
                if child.is_file():
                    child.unlink()
        t0 = time.monotonic()
        partial = target.with_suffix(".tar.partial")
        subprocess.run(["tar", "-C", str(rootfs), "--sort=name", "--numeric-owner", "-cf", str(partial), "."],
                       check=True)
        os.replace(partial, target)
        times["tar_s"] = time.monotonic() - t0
    return target, times


def import_base(tar: Path, name: str, docker: list[str]) -> tuple[str, float]:
    """``docker import`` the rootfs tar as ``name`` (``docker``: the CLI argv prefix, e.g. with ``-H``)."""
    t0 = time.monotonic()
    with open(tar, "rb") as f:
        out = subprocess.run([*docker, "import", "-", name], stdin=f, check=True, capture_output=True, text=True)
    return out.stdout.strip(), time.monotonic() - t0
