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
from ggufpack.frontend.run_op import command_of, op_spec
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


def _exec_args(text: str) -> list[list[str]]:
    _, state = _translate(text)
    definition = llb.marshal(state.fs)  # type: ignore[attr-defined]
    return [list(o.exec.meta.args) for o in map(ops.Op.FromString, getattr(definition, "def")) if o.HasField("exec")]


def test_exec_ops_carry_only_their_own_arguments() -> None:
    """A LABEL added (and every later line moved) leaves the exec ops' bytes, hence their cache keys, alone."""
    text = (QUICKSTART / "GGUFPackerfile").read_text()
    edited = text.replace("QUANTIZE --from=f16", "LABEL edited=yes\nQUANTIZE --from=f16")
    assert edited != text
    assert _exec_args(edited) == _exec_args(text)
    assert _exec_args(text.replace("--type=F16", "--type=BF16")) != _exec_args(text)
    spec = json.loads(_exec_args(text)[0][-1])
    assert "packerfile" not in spec and spec["keyword"] == "CONVERT"


def test_run_op_rebuilds_the_planned_command() -> None:
    text = ("FROM scratch\nQUANTIZE --type=q4_k_m --imatrix=/m.imatrix --include-weights=attn "
            "--tensor-type=attn_v=q8_0 --override-kv=a=int:1 --pure /a.gguf /b.gguf\n"
            "CONVERT --from=context --class=lora --base=base --split-max-size=2G adapter /x.gguf\n"
            "IMATRIX --chunks=3 /b.gguf cal.txt /b.imatrix\nCMD [\"-m\", \"/b.gguf\"]\n")
    plan = plan_text(text, "GGUFPackerfile", {}, None)
    for op in plan.stages[0].ops[:3]:
        rebuilt = command_of(json.loads(json.dumps(op_spec(op.command, source="stage", from_stage=False))))
        assert rebuilt.arguments() == op.command.arguments()
        if hasattr(op.command, "options"):
            assert rebuilt.options == op.command.options  # type: ignore[attr-defined]


def test_from_an_image_resolves_its_config_and_pins_the_digest() -> None:
    """FROM <image> / COPY --from=<image>: the config through ResolveImageConfig, CMD, labels, history inherited."""
    base_config = {"architecture": "amd64", "os": "linux",
                   "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
                   "history": [{"created_by": "CONVERT x"}, {"created_by": "CMD", "empty_layer": True}],
                   "config": {"Cmd": ["-m", "/m.gguf"], "Labels": {"team": "a", "gguf.model.name": "m"}}}
    resolved: list[str] = []

    def resolve(ref: str, platform: object) -> tuple[str, dict]:
        resolved.append(ref)
        return "sha256:" + "2" * 64, base_config

    text = "FROM 127.0.0.1:5000/base:1\nCOPY --from=127.0.0.1:5000/base:1 /m.gguf /copy.gguf\nLABEL own=b\n"
    plan = plan_text(text, "GGUFPackerfile", {}, None)
    t = Translator(plan, frontend_image="127.0.0.1:1/ggufpack-frontend:x", session="s", packerfile=text,
                   filename="GGUFPackerfile", build_args={}, target=None, source_date_epoch=None)
    t.resolve_image = resolve
    state = t.translate()
    assert resolved == ["127.0.0.1:5000/base:1"]  # resolved once
    assert state.cmd == ["-m", "/m.gguf"] and state.labels == {"team": "a", "gguf.model.name": "m", "own": "b"}
    assert [h["created_by"] for h in state.history][:2] == ["CONVERT x", "CMD"]
    assert state.base_image is not None and state.base_image.digest == "sha256:" + "2" * 64
    sources = [o.source.identifier for o in map(ops.Op.FromString, getattr(llb.marshal(state.fs), "def"))
               if o.HasField("source")]
    assert sources == ["docker-image://127.0.0.1:5000/base:1@sha256:" + "2" * 64]


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
    plan = plan_text(text, "GGUFPackerfile", {}, None)
    convert, quantize = plan.stages[0].ops[0].command, plan.stages[1].ops[1].command
    spec = op_spec(convert, source="context", from_stage=True)
    subprocess.run([sys.executable, "-m", "ggufpack.frontend.run_op", json.dumps(spec)], env=env, check=True,
                   capture_output=True)
    (root / "src" / "models").mkdir(parents=True)
    (root / "out" / "tiny-llama.F16.gguf").rename(root / "src" / "models" / "tiny-llama.F16.gguf")
    spec = op_spec(quantize, source="stage", from_stage=True)
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
    _assert_model_ops_cached(second.stderr + second.stdout)

    # the Packerfile edited elsewhere (a LABEL added, later lines moved): the exec ops stay cached
    text = (ctx / "GGUFPackerfile").read_text()
    (ctx / "GGUFPackerfile").write_text(text.replace("QUANTIZE --from=f16", "LABEL edited=yes\nQUANTIZE --from=f16"))
    t0 = time.monotonic()
    third = _bk_build(d, ctx, frontend, "quick:bk3")
    times["buildkit_label_edit_s"] = time.monotonic() - t0
    assert third.returncode == 0, third.stdout + third.stderr
    _assert_model_ops_cached(third.stderr + third.stdout)
    labels = json.loads(d.docker("image", "inspect", "--format", "{{json .Config.Labels}}", "quick:bk3").stdout)
    assert labels["edited"] == "yes"
    print("times:", json.dumps(times))


def _assert_model_ops_cached(out: str) -> None:
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


@pytest.mark.slow
def test_from_a_registry_image_on_buildkit_inherits_its_cmd_and_model(buildkit: tuple, tmp_path: Path) -> None:
    """FROM <image> (pushed by ggufpack to the loopback registry) without CMD: BuildKit resolves its config and
    the image inherits CMD, model and labels, its files equal to the local build of the same Packerfile."""
    d, reg, frontend, times = buildkit
    home = tmp_path / "home"
    _ggufpack(home, "build", "-t", "quick:local", str(QUICKSTART))
    base = f"{reg.host}/quick-base:1"
    _ggufpack(home, "tag", "quick:local", base)
    _ggufpack(home, "push", "--plain-http", "-q", base)
    ctx = tmp_path / "derived"
    ctx.mkdir()
    (ctx / "GGUFPackerfile").write_text(
        f"FROM {base}\nCOPY --from={base} /system-prompt.txt /prompt-copy.txt\nLABEL derived=yes\n")
    _ggufpack(home, "build", "-t", "derived:local", str(ctx))
    t0 = time.monotonic()
    result = _bk_build(d, ctx, frontend, "derived:bk")
    times["buildkit_from_image_s"] = time.monotonic() - t0
    assert result.returncode == 0, result.stdout + result.stderr + d.log_text()[-4000:]
    remote = f"{reg.host}/derived:bk"
    d.docker("tag", "derived:bk", remote)
    d.docker("push", remote)
    _ggufpack(home, "pull", "--plain-http", "-q", remote)
    store = Store(home)
    local_files, local_config = _layer_files(store, "derived:local")
    bk_files, bk_config = _layer_files(store, remote)
    assert sorted(bk_files) == sorted(local_files) and "prompt-copy.txt" in bk_files
    for name, data in local_files.items():
        assert bk_files[name] == data, name
    for key in SHARED_FIELDS:
        assert bk_config["config"].get(key) == local_config["config"].get(key), key
    assert bk_config["config"]["Cmd"][:2] == ["-m", "/models/tiny-llama.Q5_K_M.gguf"]
    assert bk_config["config"]["Labels"]["derived"] == "yes"
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


@pytest.mark.slow
def test_a_failing_convert_on_buildkit_shows_the_converters_error_at_its_line(buildkit: tuple,
                                                                               tmp_path: Path) -> None:
    d, _, frontend, _ = buildkit
    ctx = tmp_path / "badconvert"
    (ctx / "hf").mkdir(parents=True)
    (ctx / "hf" / "config.json").write_text(json.dumps({"architectures": ["NoSuchModelForCausalLM"]}))
    (ctx / "hf" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (ctx / "GGUFPackerfile").write_text('FROM scratch\nCOPY hf /hf\nCONVERT /hf /m.gguf\nCMD ["-m", "/m.gguf"]\n')
    local = _ggufpack(tmp_path / "home", "build", str(ctx), check=False)
    assert local.returncode == 1, local.stderr
    first = next(line for line in local.stderr.splitlines() if line.startswith("error: ")).removeprefix("error: ")
    assert first.startswith(f"{ctx / 'GGUFPackerfile'}:3:"), first
    converter_says = first.split(": ", 1)[1]
    result = _bk_build(d, ctx, frontend, "badconvert:bk")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "GGUFPackerfile:3:" in out and "CONVERT failed on BuildKit" in out, out
    assert converter_says.split(";")[0] in out, (converter_says, out)  # the converter's words, in its step's log
    print("a failing CONVERT on BuildKit:", out[-1500:])


def test_add_of_a_url_is_an_http_source_with_its_checksum() -> None:
    digest = "sha256:" + "a" * 64
    _, state = _translate(f"FROM scratch\nADD --checksum={digest} http://127.0.0.1:9/m.gguf /models/\n"
                          'CMD ["-m", "/models/m.gguf"]\n')
    definition = llb.marshal(state.fs)  # type: ignore[attr-defined]
    sources = [o.source for o in map(ops.Op.FromString, getattr(definition, "def")) if o.HasField("source")]
    assert [(x.identifier, dict(x.attrs)) for x in sources] == [
        ("http://127.0.0.1:9/m.gguf", {"http.checksum": digest})]


@pytest.mark.slow
def test_add_of_a_url_with_a_checksum_on_buildkit(buildkit: tuple, tmp_path: Path) -> None:
    """ADD --checksum of a loopback HTTP URL: BuildKit (dockerd's own process, the host's loopback) downloads it;
    the files equal the local build's; a wrong checksum fails the build."""
    import hashlib

    from tests.helpers.httpserver import LoopbackHTTPServer

    d, reg, frontend, times = buildkit
    home = tmp_path / "home"
    _ggufpack(home, "build", "-t", "quick:local", str(QUICKSTART))
    model = _layer_files(Store(home), "quick:local")[0]["models/tiny-llama.Q5_K_M.gguf"]
    with LoopbackHTTPServer() as server:
        server.add_file("/dl/tiny.gguf", model)
        url = server.url("/dl/tiny.gguf")
        good = "sha256:" + hashlib.sha256(model).hexdigest()
        ctx = tmp_path / "url"
        ctx.mkdir()
        (ctx / "GGUFPackerfile").write_text(f"FROM scratch\nADD --checksum={good} {url} /models/\n"
                                            'CMD ["-m", "/models/tiny.gguf"]\n')
        _ggufpack(home, "build", "-t", "url:local", str(ctx))
        t0 = time.monotonic()
        result = _bk_build(d, ctx, frontend, "url:bk")
        times["buildkit_add_url_s"] = time.monotonic() - t0
        assert result.returncode == 0, result.stdout + result.stderr + d.log_text()[-4000:]
        remote = f"{reg.host}/url:bk"
        d.docker("tag", "url:bk", remote)
        d.docker("push", remote)
        _ggufpack(home, "pull", "--plain-http", "-q", remote)
        store = Store(home)
        local_files, local_config = _layer_files(store, "url:local")
        bk_files, bk_config = _layer_files(store, remote)
        assert bk_files == local_files and list(bk_files) == ["models/tiny.gguf"]
        for key in SHARED_FIELDS:
            assert bk_config["config"].get(key) == local_config["config"].get(key), key

        bad = tmp_path / "bad-sum"
        bad.mkdir()
        (bad / "GGUFPackerfile").write_text(f"FROM scratch\nADD --checksum=sha256:{'0' * 64} {url} /models/\n"
                                            'CMD ["-m", "/models/tiny.gguf"]\n')
        failed = _bk_build(d, bad, frontend, "bad-sum:bk")
        said = failed.stdout + failed.stderr
        # BuildKit's own words, at the ADD's line (not a missing file of the CMD later)
        assert failed.returncode != 0 and "digest mismatch" in said and "GGUFPackerfile:2:" in said, said
        assert "CMD names" not in said, said
        print("bad checksum on BuildKit:", (failed.stdout + failed.stderr)[-600:])
    print("times:", json.dumps(times))
