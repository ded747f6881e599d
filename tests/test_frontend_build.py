"""The quickstart built by BuildKit through ggufpack's frontend (``ggufpack frontend serve``) gives the local
build's image: every file byte-identical and the config's gguf-packer fields and labels equal.

Real all the way: a private dockerd (Debian's docker.io, embedded BuildKit) pulls the frontend image
(ggufpack with llama-cpp-python, built offline: :mod:`ggufpack.frontend.image`) from a loopback registry
through ``--build-arg BUILDKIT_SYNTAX``; the result is ``docker push``ed to that registry and pulled with
``ggufpack pull --plain-http`` into the store the local build wrote. Also: a Packerfile error fails the
BuildKit build with the local ``FILE:LINE:COL`` message, and a second identical build runs no exec op.

The fast tests need no daemon: the LLB translation of the quickstart, and ``run_op`` (what the ExecOps run)
writing the same bytes as the local engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ggufpack.frontend import llb
from ggufpack.frontend.protos import ops
from ggufpack.frontend.serve import Translator, plan_text
from ggufpack.store import Store
from tests.helpers.dockerd import LocalDockerd, frontend_on_buildkit
from tests.helpers.registry import LocalRegistry

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "Packerfile.samples" / "quickstart"
#: the fields of the config that a local and a BuildKit build must share (``history``/``created`` may differ)
SHARED_FIELDS = ("Cmd", "Labels", "Size", "Model", "Drafter", "Projector", "Adapters")


def _ggufpack(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GGUFPACK_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "ggufpack", *args], env=env, capture_output=True, text=True,
                          check=check, timeout=600)


def _translate(text: str) -> tuple[Translator, object]:
    plan = plan_text(text, "GGUFPackerfile", {}, None)
    t = Translator(plan, frontend_image="127.0.0.1:1/ggufpack-frontend:x", session="s", packerfile=text,
                   filename="GGUFPackerfile", build_args={}, target=None, source_date_epoch=None)
    return t, t.translate()


def test_quickstart_translates_to_llb() -> None:
    _, state = _translate((QUICKSTART / "GGUFPackerfile").read_text())
    definition = llb.marshal(state.fs)  # type: ignore[attr-defined]
    kinds = [ops.Op.FromString(b).WhichOneof("op") for b in getattr(definition, "def")]
    # context + frontend image sources, two exec ops (CONVERT, QUANTIZE), their copies and the CAT, the terminal
    assert kinds.count("exec") == 2 and kinds.count("source") == 2 and kinds[-1] is None
    execs = [ops.Op.FromString(b).exec for b in getattr(definition, "def") if ops.Op.FromString(b).HasField("exec")]
    assert all(e.network == 2 for e in execs)  # NONE
    assert all(m.readonly for e in execs for m in e.mounts if m.dest in ("/ctx", "/src", "/cur"))
    context = next(ops.Op.FromString(b).source for b in getattr(definition, "def")
                   if ops.Op.FromString(b).source.identifier == "local://context")
    assert json.loads(context.attrs["local.includepattern"]) == ["tiny-llama", "tiny-llama/**"]
    assert state.cmd[:2] == ["-m", "/models/tiny-llama.Q5_K_M.gguf"]  # type: ignore[attr-defined]
    assert [h.get("empty_layer", False) for h in state.history] == [True, False, False, True]  # type: ignore


def test_run_op_writes_the_local_engines_bytes(tmp_path: Path) -> None:
    """What the ExecOps run (run_op on mounted inputs) writes what the local build's CONVERT/QUANTIZE write."""
    home = tmp_path / "home"
    _ggufpack(home, "build", "-t", "quick:local", str(QUICKSTART))
    local_files = {p.name for p in (home / "files" / "sha256").iterdir()}
    root = tmp_path / "root"
    shutil.copytree(QUICKSTART, root / "ctx")
    (root / "out").mkdir()
    text = (QUICKSTART / "GGUFPackerfile").read_text()
    env = dict(os.environ, GGUFPACK_RUN_OP_ROOT=str(root))
    spec = {"packerfile": text, "filename": "GGUFPackerfile", "build_args": {}, "target": None,
            "stage": 0, "op": 0, "source": "context"}
    subprocess.run([sys.executable, "-m", "ggufpack.frontend.run_op", json.dumps(spec)], env=env, check=True,
                   capture_output=True)
    (root / "src" / "models").mkdir(parents=True)
    (root / "out" / "tiny-llama.F16.gguf").rename(root / "src" / "models" / "tiny-llama.F16.gguf")
    spec.update(stage=1, op=1, source="stage")
    subprocess.run([sys.executable, "-m", "ggufpack.frontend.run_op", json.dumps(spec)], env=env, check=True,
                   capture_output=True)
    import hashlib

    for path in [root / "src" / "models" / "tiny-llama.F16.gguf", root / "out" / "tiny-llama.Q5_K_M.gguf"]:
        assert hashlib.sha256(path.read_bytes()).hexdigest() in local_files, path


# -- on BuildKit ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def buildkit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalDockerd, LocalRegistry, str, dict]]:
    with frontend_on_buildkit(Path(tmp_path_factory.mktemp("fb")), "ggufpack frontend serve") as f:
        yield f.dockerd, f.registry, f.remote, f.times


def _layer_files(store: Store, ref: str) -> tuple[dict[str, bytes], dict]:
    from ggufpack.image.stored import read_image

    image = read_image(store, store.resolve(ref))
    files: dict[str, bytes] = {}
    for layer in image.manifest.layers:
        with tarfile.open(store.blob_path(layer.digest)) as t:
            for member in t.getmembers():
                name = member.name.lstrip("./")
                if member.isfile():
                    files[name] = t.extractfile(member).read()  # type: ignore[union-attr]
                elif member.name.split("/")[-1].startswith(".wh."):
                    files.pop(name, None)
    return files, image.config.raw


def _bk_build(d: LocalDockerd, ctx: Path, frontend: str, tag: str, *args: str) -> subprocess.CompletedProcess[str]:
    return d.build(ctx, "-f", str(ctx / "GGUFPackerfile"), "--build-arg", f"BUILDKIT_SYNTAX={frontend}", *args,
                   tag=tag, check=False)


@pytest.mark.slow
def test_quickstart_on_buildkit_is_the_local_image(buildkit: tuple, tmp_path: Path) -> None:
    d, reg, frontend, times = buildkit
    home = tmp_path / "home"
    t0 = time.monotonic()
    _ggufpack(home, "build", "-t", "quick:local", str(QUICKSTART))
    times["local_build_s"] = time.monotonic() - t0
    ctx = tmp_path / "ctx"
    shutil.copytree(QUICKSTART, ctx)

    t0 = time.monotonic()
    first = _bk_build(d, ctx, frontend, "quick:bk")
    times["buildkit_build_s"] = time.monotonic() - t0
    assert first.returncode == 0, first.stdout + first.stderr + d.log_text()[-4000:]
    remote = f"{reg.host}/quick:bk"
    d.docker("tag", "quick:bk", remote)
    d.docker("push", remote)
    _ggufpack(home, "pull", "--plain-http", "-q", remote)

    store = Store(home)
    local_files, local_config = _layer_files(store, "quick:local")
    bk_files, bk_config = _layer_files(store, remote)
    assert sorted(bk_files) == sorted(local_files)
    for name, data in local_files.items():
        assert bk_files[name] == data, name
    for key in SHARED_FIELDS:
        assert bk_config["config"].get(key) == local_config["config"].get(key), key
    assert bk_config["architecture"] == "amd64" and bk_config["os"] == "linux"
    differ = {k: (local_config.get(k), bk_config.get(k)) for k in ("created", "history")
              if local_config.get(k) != bk_config.get(k)}
    print("config keys that differ (local, buildkit):", json.dumps(differ, indent=1))

    # a second identical build: every step cached, no exec op run
    t0 = time.monotonic()
    second = _bk_build(d, ctx, frontend, "quick:bk2")
    times["buildkit_rebuild_s"] = time.monotonic() - t0
    assert second.returncode == 0, second.stdout + second.stderr
    out = second.stderr + second.stdout
    vertices: dict[str, list[str]] = {}
    for line in out.splitlines():
        number, _, rest = line.partition(" ")
        if number.startswith("#") and number[1:].isdigit():
            vertices.setdefault(number, []).append(rest)
    model_ops = {n: lines for n, lines in vertices.items()
                 if any(k in lines[0] for k in ("CONVERT", "QUANTIZE")) and "(into the stage)" not in lines[0]}
    assert len(model_ops) == 2, out
    for lines in model_ops.values():
        assert "CACHED" in lines, (lines, out)
    print("times:", json.dumps(times))


@pytest.mark.slow
def test_packerfile_error_fails_the_buildkit_build_with_the_local_message(buildkit: tuple, tmp_path: Path) -> None:
    d, _, frontend, _ = buildkit
    ctx = tmp_path / "bad"
    ctx.mkdir()
    (ctx / "GGUFPackerfile").write_text("FROM scratch\nQUANTIZE --type=NOPE a.gguf /b.gguf\n")
    local = _ggufpack(tmp_path / "home", "build", str(ctx), check=False)
    assert local.returncode != 0
    message = local.stderr.strip().splitlines()[0].removeprefix("error: ")
    assert message.startswith(f"{ctx / 'GGUFPackerfile'}:2:")
    result = _bk_build(d, ctx, frontend, "bad:bk")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    # the same message, naming the file as BuildKit's client sent it
    assert message.replace(str(ctx / "GGUFPackerfile"), "GGUFPackerfile") in out, out
