"""Backends: the capability map, detection, listing and resolving, sideloading a read-only build, install errors.

The sideload tests use the real CPU tools built by ``tests/helpers/llamacpp_build.py`` (cached across
runs), linked into a directory that is then made read-only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import gguf
import pytest

from ggufpack import cli
from ggufpack.backends import IN_PROCESS, Backend, list_backends, resolve_backend
from ggufpack.backends.capability import DeviceDescription, preferred_accelerators, select_variant
from ggufpack.backends.detect import detect_device
from ggufpack.backends.install import install, missing_toolchain
from ggufpack.backends.sideload import derived_name
from ggufpack.convert import convert
from ggufpack.errors import GGUFPackError, UsageError
from tests.helpers import llamacpp_build
from tests.helpers.tinymodels import make_tiny_llama

ALL = frozenset({"llama.cpp-cpu", "llama.cpp-cuda", "llama.cpp-rocm", "llama.cpp-vulkan"})


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    monkeypatch.setenv("GGUFPACK_HOME", str(root))
    monkeypatch.delenv("GGUFPACK_BACKENDS_PATH", raising=False)
    return root


# --- the capability map: a pure function of what detection saw ---------------------------------

@pytest.mark.parametrize(("device", "order"), [
    (DeviceDescription(), ("cpu",)),
    (DeviceDescription(nvidia="nvidia-smi"), ("cuda", "vulkan", "cpu")),
    (DeviceDescription(nvidia="/proc/driver/nvidia", vulkan="vulkaninfo: RTX"), ("cuda", "vulkan", "cpu")),
    (DeviceDescription(amd="/dev/kfd"), ("rocm", "vulkan", "cpu")),
    (DeviceDescription(vulkan="vulkaninfo: Intel Arc"), ("vulkan", "cpu")),
])
def test_preferred_accelerators(device: DeviceDescription, order: tuple[str, ...]):
    assert preferred_accelerators(device) == order


def test_select_variant_takes_the_best_installed_one():
    nvidia = DeviceDescription(nvidia="nvidia-smi")
    assert select_variant(nvidia, ALL) == "llama.cpp-cuda"
    assert select_variant(nvidia, ALL - {"llama.cpp-cuda"}) == "llama.cpp-vulkan"
    assert select_variant(nvidia, {"llama.cpp-cpu", "llama.cpp-rocm"}) == "llama.cpp-cpu"
    assert select_variant(DeviceDescription(amd="rocminfo"), ALL) == "llama.cpp-rocm"
    assert select_variant(DeviceDescription(), ALL) == "llama.cpp-cpu"  # never a GPU build without a GPU
    assert select_variant(DeviceDescription(), {"llama.cpp-cuda"}) is None


def test_detection_reports_what_this_machine_has():
    device = detect_device()
    has_nvidia = shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0
    assert bool(device.nvidia) == (has_nvidia or Path("/proc/driver/nvidia").exists())
    assert bool(device.amd) == (Path("/dev/kfd").exists() or device.amd == "rocminfo")


# --- listing and resolving -----------------------------------------------------------------------

def test_in_process_and_fallback_are_always_there(home: Path):
    import llama_cpp

    names = {b.name: b for b in list_backends()}
    assert names[IN_PROCESS].kind == "in-process" and names[IN_PROCESS].version.endswith(llama_cpp.__version__)
    assert {"quantize", "imatrix"} <= names[IN_PROCESS].capabilities
    assert names["numpy"].kind == "fallback" and names["numpy"].capabilities == {"quantize"}
    assert resolve_backend(None, "quantize") == names[IN_PROCESS]
    assert resolve_backend("numpy", "quantize") == names["numpy"]
    with pytest.raises(GGUFPackError, match="'numpy' cannot imatrix"):
        resolve_backend("numpy", "imatrix")
    with pytest.raises(GGUFPackError, match=r"no backend named 'nope'.*llama-cpp-python"):
        resolve_backend("nope", "quantize")
    with pytest.raises(GGUFPackError, match=r"no llama.cpp backend is installed.*backends install llama.cpp"):
        resolve_backend("llama.cpp", "quantize")
    with pytest.raises(GGUFPackError, match="has no llama-quantize"):
        names[IN_PROCESS].tool("llama-quantize")
    with pytest.raises(UsageError, match="not a valid backend name"):
        resolve_backend("../etc", "quantize")


def test_cli_list(home: Path, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["backends", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "ACCELERATOR", "VERSION", "CAPABILITIES", "PATH"]
    assert any(line.startswith("numpy ") for line in lines)
    assert cli.main(["backends", "list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {IN_PROCESS, "numpy"}
    assert cli.main(["backends", "remove", "numpy"]) == 2
    assert "part of ggufpack" in capsys.readouterr().err


# --- install: what is refused before anything is built -------------------------------------------

def test_install_refusals(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(UsageError, match=r"cannot install 'llama.cpp-metal'"):
        install("llama.cpp-metal")
    with pytest.raises(UsageError, match=r"not a llama.cpp source tree"):
        install("llama.cpp-cpu", source=tmp_path)
    if shutil.which("hipcc") is None:
        with pytest.raises(GGUFPackError, match=r"cannot build llama.cpp-rocm: missing hipcc"):
            install("llama.cpp-rocm", source=tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert missing_toolchain("vulkan") == ["cmake", "glslc", "a C compiler (gcc or clang)",
                                           "a C++ compiler (g++ or clang++)"]
    with pytest.raises(GGUFPackError, match="missing cmake, a C compiler"):
        install("llama.cpp-cpu", source=tmp_path)
    assert not (home / "backends").exists()


def test_install_that_waited_for_another_one_does_not_build_again(home: Path, tmp_path: Path):
    """Two installs of one variant: the second waits for the first's lock, then finds it installed."""
    import threading

    from ggufpack.util.locking import locked

    if missing_toolchain("cpu"):
        pytest.skip("no cmake or C/C++ compiler")
    tree = tmp_path / "llama.cpp"
    (tree / "tools" / "quantize").mkdir(parents=True)
    (tree / "CMakeLists.txt").write_text("this is not CMake: a build would fail on it\n")
    backends = home / "backends"
    backends.mkdir(parents=True)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            install("llama.cpp-cpu", source=tree)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    with locked(backends / ".build-llama.cpp-cpu.lock"):  # the first install, building
        waiting = threading.Thread(target=second)
        waiting.start()
        waiting.join(2.0)  # it waits for the lock
        assert waiting.is_alive()
        (backends / "llama.cpp-cpu" / "bin").mkdir(parents=True)  # the first one finishes
    waiting.join(30)
    assert len(errors) == 1 and isinstance(errors[0], GGUFPackError), errors
    assert "installed in" in str(errors[0]) and "cmake" not in str(errors[0])
    assert not (backends / ".build-llama.cpp-cpu").exists() and not list(backends.glob(".install-*"))


def test_a_damaged_sdist_archive_is_a_clear_error_and_leaves_nothing(tmp_path: Path):
    from ggufpack.backends.source import _extract

    archive = tmp_path / "llama_cpp_python-0.0.1.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 truncated")
    with pytest.raises(GGUFPackError, match=r"cannot extract .*delete it"):
        _extract(archive, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]


# --- sideloading a real build from a read-only directory ----------------------------------------

def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.lstat().st_mtime_ns, p.lstat().st_size) for p in directory.iterdir()}


@pytest.fixture
def readonly_tools(tmp_path: Path) -> Path:
    built = llamacpp_build.built_cpu_dir() / "bin"
    tools = tmp_path / "opt" / "llama.cpp" / "bin"
    tools.mkdir(parents=True)
    for tool in ("llama-quantize", "llama-imatrix", "llama-server"):
        (tools / tool).symlink_to(built / tool)
    tools.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    yield tools
    tools.chmod(0o755)


@pytest.mark.slow
def test_sideloaded_read_only_build(home: Path, tmp_path: Path, readonly_tools: Path,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    before = snapshot(readonly_tools)
    monkeypatch.setenv("GGUFPACK_BACKENDS_PATH", f"{tmp_path / 'missing'}{os.pathsep}{readonly_tools}")
    name = derived_name(readonly_tools.resolve())
    found = {b.name: b for b in list_backends()}
    backend = found[name]
    assert backend.kind == "sideloaded" and backend.path == readonly_tools.resolve()
    assert backend.capabilities == {"quantize", "imatrix", "server"} and backend.accelerator == "cpu"
    server = subprocess.run([backend.tool("llama-server"), "--version"], capture_output=True, text=True, check=True)
    number, commit = re.search(r"version: \S+ \(build (\d+), commit (\w+)\)", server.stdout + server.stderr).groups()
    assert backend.version == f"b{number}-{commit}"

    record = json.loads((home / "state" / "backends" / f"{name}.json").read_text())
    assert record["path"] == str(readonly_tools.resolve()) and record["found_via"] == "GGUFPACK_BACKENDS_PATH"
    assert resolve_backend(name, "quantize") == backend

    # used for a real quantize: the tool's output is a Q4_K_M GGUF of the model
    model = convert(make_tiny_llama(tmp_path / "model", seed=21), tmp_path / "m-f16.gguf").path
    out = tmp_path / "m-q4km.gguf"
    subprocess.run([backend.tool("llama-quantize"), model, out, "Q4_K_M", "1"], capture_output=True, check=True)
    reader = gguf.GGUFReader(out)
    assert reader.get_field("general.file_type").contents() == gguf.LlamaFileType.MOSTLY_Q4_K_M
    Q = gguf.GGMLQuantizationType
    assert {Q.Q5_0, Q.Q8_0} <= {t.tensor_type for t in reader.tensors}  # Q4_K/Q6_K's fallbacks for 64-wide rows

    # removing it forgets our record only; the tools stay, and since they are still on the path it says so
    assert cli.main(["backends", "remove", name]) == 0
    message = capsys.readouterr().out
    assert "untouched" in message and "will be found again" in message
    assert not (home / "state" / "backends" / f"{name}.json").exists()
    assert snapshot(readonly_tools) == before
    assert all(os.access(readonly_tools / t, os.X_OK) for t in before)


@pytest.mark.slow
def test_backends_add_and_remove(home: Path, readonly_tools: Path, capsys: pytest.CaptureFixture[str]):
    before = snapshot(readonly_tools)
    assert cli.main(["backends", "add", str(readonly_tools), "--name", "distro"]) == 0
    assert "added distro" in capsys.readouterr().out
    config = json.loads((home / "config" / "backends.json").read_text())
    assert config == {"dirs": [{"name": "distro", "path": str(readonly_tools.resolve())}]}
    backend = resolve_backend("distro", "imatrix")
    assert isinstance(backend, Backend) and backend.kind == "sideloaded"
    assert cli.main(["backends", "add", str(readonly_tools.parent)]) == 2  # no tools there
    for reserved in ("numpy", "llama-cpp-python", "llama.cpp"):  # such a backend could never be used nor removed
        assert cli.main(["backends", "add", str(readonly_tools), "--name", reserved]) == 2
        assert "keeps for itself" in capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["backends", "remove", "distro"]) == 0
    assert "will be found again" not in capsys.readouterr().out
    assert json.loads((home / "config" / "backends.json").read_text()) == {"dirs": []}
    assert "distro" not in {b.name for b in list_backends()}
    assert snapshot(readonly_tools) == before
