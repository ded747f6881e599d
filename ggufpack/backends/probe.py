"""Learning what a directory of llama.cpp tools is by running and inspecting them.

- capabilities: which of ``llama-quantize``/``llama-imatrix``/``llama-server`` are there *and run*
  (``llama-quantize --help`` prints its usage; the other two answer ``--version``);
- version: ``llama-imatrix``/``llama-server --version`` print ``version: <build number> (<commit>)``;
  ``llama-quantize`` has no ``--version``, so a directory with only that tool is identified by the
  hash of its binary (which is what a cache key needs anyway);
- trust: a tool that others could have changed (:mod:`ggufpack.backends.trust`) is never run; it is
  reported as a problem instead;
- accelerator: the GPU runtimes the tools link against (``ldd`` lists transitive dependencies) or
  the ggml backend libraries beside them (builds with ``GGML_BACKEND_DL`` load those at run time).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .trust import untrusted

#: capability → the tool that provides it
TOOLS = {"quantize": "llama-quantize", "imatrix": "llama-imatrix", "server": "llama-server"}

#: library name fragments → the accelerator they mean, in order of precedence
_ACCELERATOR_LIBS = (
    ("cuda", ("libcudart", "libcublas", "libcuda.so", "libggml-cuda")),
    ("rocm", ("libamdhip64", "libhipblas", "librocblas", "libggml-hip")),
    ("vulkan", ("libvulkan", "libggml-vulkan")),
)
# "version: 0.5.0-dev (build 1, commit 0c1e570)" (current), "version: 4000 (abc1234)" (older builds)
_VERSION = re.compile(r"version:\s*(?:\S+\s+\(build\s+(\d+),\s*commit\s+(\w+)\)|(\d+)\s*\((\w+)\))")
_BUILT_WITH = re.compile(r"built with (.+)")
_TIMEOUT_S = 30


@dataclass(frozen=True)
class Probe:
    """What running and inspecting the tools of one directory showed."""

    capabilities: frozenset[str]
    version: str
    accelerator: str
    build_number: int | None = None
    commit: str | None = None
    built_with: str | None = None  # "GNU 12.2.0 for Linux x86_64", from --version
    problems: tuple[str, ...] = ()


def present_tools(directory: Path) -> dict[str, Path]:
    """capability → tool path, for the tools present in ``directory`` as executable files."""
    found = {}
    for capability, tool in TOOLS.items():
        path = directory / tool
        if path.is_file() and shutil.which(tool, path=str(directory)):
            found[capability] = path
    return found


def fingerprint(directory: Path) -> dict[str, list[int]]:
    """Size, mtime, owner and mode of each tool (and owner and mode of the directory): when these change,
    the directory must be probed again (a tool refused as writable by others is probed once fixed)."""
    out = {}
    for capability, path in present_tools(directory).items():
        st = path.stat()
        out[capability] = [st.st_size, st.st_mtime_ns, st.st_uid, st.st_mode]
    st = directory.stat()
    out["directory"] = [st.st_uid, st.st_mode]
    return out


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, str(exc)
    return done.returncode, done.stdout + done.stderr


def _tool_runs(capability: str, path: Path) -> tuple[bool, str]:
    """Whether the tool starts and answers as a llama.cpp tool should; the output for diagnostics."""
    if capability == "quantize":
        _, text = _run([str(path), "--help"])  # exits 1 after printing its usage
        return "usage:" in text and "--allow-requantize" in text, text
    code, text = _run([str(path), "--version"])
    return code == 0 and _VERSION.search(text) is not None, text


def linked_accelerator(tools: list[Path]) -> str:
    """The accelerator the executables or libraries ``tools`` were built for (``cpu`` when none)."""
    names: list[str] = []
    for tool in tools:
        names += [p.name for p in tool.parent.glob("libggml-*")]
        names += [p.name for p in (tool.parent.parent / "lib").glob("libggml-*")]
    ldd = shutil.which("ldd")
    if ldd:
        for tool in tools:
            names.append(_run([ldd, str(tool)])[1])
    text = "\n".join(names)
    for accelerator, fragments in _ACCELERATOR_LIBS:
        if any(fragment in text for fragment in fragments):
            return accelerator
    return "cpu"


def binary_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def probe(directory: Path) -> Probe:
    """Run the tools in ``directory`` and say what this llama.cpp build offers."""
    capabilities: set[str] = set()
    problems: list[str] = []
    number: int | None = None
    commit: str | None = None
    built_with: str | None = None
    tools = present_tools(directory)
    for capability, path in tools.items():
        refused = untrusted(path)
        if refused is not None:
            problems.append(f"{path.name} was not run: {refused}")
            continue
        ok, text = _tool_runs(capability, path)
        if not ok:
            tail = " ".join(text.strip().splitlines()[-2:])[:300]
            problems.append(f"{path.name} does not run: {tail or 'no output'}")
            continue
        capabilities.add(capability)
        match = _VERSION.search(text)
        if match and number is None:
            number, commit = int(match.group(1) or match.group(3)), match.group(2) or match.group(4)
            built = _BUILT_WITH.search(text)
            built_with = built.group(1).strip() if built else None
    if number is not None:
        version = f"b{number}-{commit}"
    elif "quantize" in capabilities:
        version = f"sha256-{binary_digest(tools['quantize'])}"
    else:
        version = "unknown"
    working = [tools[c] for c in sorted(capabilities)]
    return Probe(
        capabilities=frozenset(capabilities), version=version, accelerator=linked_accelerator(working),
        build_number=number, commit=commit, built_with=built_with, problems=tuple(problems),
    )
