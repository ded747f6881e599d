"""The BuildKit frontend gateway, for real: a private dockerd (Debian's docker.io, embedded BuildKit) pulls
ggufpack's probe frontend image from a loopback registry and runs it; the probe speaks LLBBridge over its
stdio (Ping, a local source Solve with ReadFile/StatFile/ReadDir, a FileOp + ExecOp Solve, Return with an
image config), and the image BuildKit exports holds the files it wrote.

The frontend image is built offline (debootstrap base, wheels unpacked) and cached under ~/.cache/ggufpack
by the hash of its inputs (:mod:`ggufpack.frontend.image`). Skipped only where dockerd cannot run.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ggufpack.frontend import llb
from ggufpack.frontend.protos import ops
from tests.helpers.dockerd import LocalDockerd, frontend_on_buildkit
from tests.helpers.registry import LocalRegistry

HELLO = b"hello from the ggufpack frontend\n"


def test_llb_definition_shape() -> None:
    state = llb.FileOps(None).mkfile("/a", b"x").mkdir("/d").output()
    definition = llb.marshal(state)
    blobs = list(getattr(definition, "def"))
    assert len(blobs) == 2  # the file op and the terminal op
    file_op, terminal = ops.Op.FromString(blobs[0]), ops.Op.FromString(blobs[1])
    first, second = file_op.file.actions
    assert (first.input, first.output, second.input, second.output) == (-1, -1, 0, 0)
    assert terminal.WhichOneof("op") is None and terminal.inputs[0].digest == llb.digest_of(blobs[0])
    assert definition.metadata[llb.digest_of(blobs[0])].caps["file.base"]
    assert llb.marshal(llb.FileOps(None).mkfile("/a", b"x").mkdir("/d").output()) == definition  # deterministic


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalDockerd, LocalRegistry, str]]:
    with frontend_on_buildkit(Path(tmp_path_factory.mktemp("gw")), "ggufpack.frontend.probe", tag="probe") as f:
        yield f.dockerd, f.registry, f.remote


def _files(d: LocalDockerd, image: str, tmp_path: Path) -> dict[str, bytes]:
    archive = tmp_path / "image.tar"
    d.docker("save", "-o", str(archive), image)
    files: dict[str, bytes] = {}
    with tarfile.open(archive) as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=t.extractfile(layer)) as lt:
                for member in lt.getmembers():
                    if member.isfile():
                        files[member.name] = lt.extractfile(member).read()  # type: ignore[union-attr]
    return files


@pytest.mark.slow
@pytest.mark.parametrize("how", ["syntax-line", "build-arg"])
def test_probe_frontend_builds_an_image(daemon: tuple[LocalDockerd, LocalRegistry, str], tmp_path: Path,
                                        how: str) -> None:
    d, _, remote = daemon
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    args: list[str] = []
    if how == "syntax-line":
        (ctx / "Dockerfile").write_text(f"# syntax={remote}\nthe probe ignores this\n")
    else:
        (ctx / "Dockerfile").write_text("the probe ignores this\n")
        args = ["--build-arg", f"BUILDKIT_SYNTAX={remote}"]
    result = d.build(ctx, *args, tag=f"probe:{how}", check=False)
    assert result.returncode == 0, result.stdout + result.stderr + d.log_text()[-3000:]
    assert "[probe] write files" in result.stderr + result.stdout

    files = _files(d, f"probe:{how}", tmp_path)
    assert files["hello.txt"] == HELLO
    assert files["copied.txt"] == HELLO.upper()  # made by an exec op in the frontend's own image
    seen = json.loads(files["gateway.json"])
    assert seen["frontend_caps"]["readfile"] and seen["frontend_caps"]["statfile"]
    assert seen["dockerfile"]["head"] == (ctx / "Dockerfile").read_text()[:40]
    assert seen["options"]["source"] == remote

    config = json.loads(d.docker("image", "inspect", f"probe:{how}", "--format", "{{json .Config}}").stdout)
    assert config["Cmd"] == ["/hello.txt"]
    assert config["Labels"]["org.ggufpack.probe.ranged-read"] == "from"  # ReadFile with a range
