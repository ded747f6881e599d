"""``ggufpack build --engine buildkit``: the quickstart through ``DOCKER_BUILDKIT=1 docker build`` with the frontend
image, ``docker save``d and loaded into the store (``ggufpack load``'s code), equals the local build.

The fast tests need no daemon: the flags the engine refuses or requires. The slow one runs a private dockerd
and a loopback registry (tests/helpers/dockerd.py); it also loads a ``docker save`` of the BuildKit image
with ``ggufpack load``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ggufpack.store import Store
from tests.helpers.builds import cli_main, image_tree
from tests.helpers.dockerd import FrontendOnBuildKit, frontend_on_buildkit

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "Packerfile.samples" / "quickstart"
SHARED_FIELDS = ("Cmd", "Labels", "Size", "Model", "Drafter", "Projector", "Adapters")


def test_buildkit_engine_needs_a_frontend_image_and_a_tag(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("GGUFPACK_DOCKER", "/bin/false")  # never reached
    no_image = cli_main(["build", "--engine", "buildkit", "-t", "qs:bk", str(QUICKSTART)], tmp_path, capsys,
                        monkeypatch)
    assert no_image.code == 2 and "--frontend-image" in no_image.err
    no_tag = cli_main(["build", "--engine", "buildkit", "--frontend-image", "x/y:1", str(QUICKSTART)], tmp_path,
                      capsys, monkeypatch)
    assert no_tag.code == 2 and "-t NAME:TAG" in no_tag.err
    backend = cli_main(["build", "--engine", "buildkit", "--frontend-image", "x/y:1", "-t", "a:b", "--backend",
                        "cpu", str(QUICKSTART)], tmp_path, capsys, monkeypatch)
    assert backend.code == 2 and "frontend image's llama.cpp" in backend.err
    pushed_artifact = cli_main(["build", "--engine", "buildkit", "--frontend-image", "x/y:1", "-t", "r.example/a:b",
                                "--push", "--format", "modelpack", str(QUICKSTART)], tmp_path, capsys, monkeypatch)
    assert pushed_artifact.code == 2 and "ggufpack push --format modelpack" in pushed_artifact.err


def test_a_failing_docker_build_is_our_error(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("GGUFPACK_DOCKER", "/bin/false")
    result = cli_main(["build", "-q", "--engine", "buildkit", "--frontend-image", "x/y:1", "-t", "a:b",
                       str(QUICKSTART)], tmp_path, capsys, monkeypatch)
    assert result.code == 1 and "the BuildKit build failed" in result.err


@pytest.fixture(scope="module")
def buildkit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontendOnBuildKit]:
    with frontend_on_buildkit(Path(tmp_path_factory.mktemp("be")), "ggufpack frontend serve") as f:
        yield f


def _ggufpack(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(env, GGUFPACK_HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "ggufpack", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def _files(store: Store, ref: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    manifest = json.loads(store.read_blob(store.resolve(ref).descriptor.digest))
    tree = image_tree(store, manifest)
    files = {name.removeprefix("./"): data for name, (kind, _, data) in tree.items() if kind == "file"}
    return files, json.loads(store.read_blob(manifest["config"]["digest"]))  # type: ignore[return-value]


@pytest.mark.slow
def test_build_engine_buildkit_lands_the_local_image_in_the_store(buildkit: FrontendOnBuildKit,
                                                                   tmp_path: Path) -> None:
    d = buildkit.dockerd
    home = tmp_path / "home"
    env = d.env(DOCKER_HOST=d.host)
    local = _ggufpack(home, env, "build", "-q", "-t", "qs:local", str(QUICKSTART))
    assert local.returncode == 0, local.stderr
    exported = tmp_path / "bk-oci"
    built = _ggufpack(home, env, "build", "--engine", "buildkit", "--frontend-image", buildkit.remote,
                      "--progress", "plain", "-t", "qs:bk", "--label", "team=platform",
                      "--output", f"type=oci,dest={exported}", str(QUICKSTART))
    assert built.returncode == 0, built.stderr[-6000:] + d.log_text()[-3000:]
    assert built.stdout.strip().startswith("sha256:")
    listing = _ggufpack(home, env, "list")
    assert "bk" in listing.stdout, listing.stdout
    store = Store(home)
    local_files, local_config = _files(store, "qs:local")
    bk_files, bk_config = _files(store, "qs:bk")
    assert bk_files == local_files
    bk_labels = bk_config["config"]["Labels"]
    assert bk_labels.pop("team") == "platform"  # --label, as locally
    assert bk_labels == local_config["config"]["Labels"]
    for key in SHARED_FIELDS:
        if key != "Labels":
            assert bk_config["config"].get(key) == local_config["config"].get(key), key
    inspect = _ggufpack(home, env, "inspect", "--format", "json", "qs:bk")
    assert inspect.returncode == 0, inspect.stderr
    index = json.loads((exported / "index.json").read_text())
    assert index["manifests"][0]["digest"] == built.stdout.strip()  # --output: the image loaded from BuildKit
    # estimate and run --dry-run see the same image
    for command in (["estimate"], ["run", "--dry-run"]):
        said = [_ggufpack(home, env, *command, ref) for ref in ("qs:local", "qs:bk")]
        assert all(r.returncode == 0 for r in said), [r.stderr for r in said]
        assert said[0].stdout.replace("qs:local", "REF") == said[1].stdout.replace("qs:bk", "REF"), command

    # --push: docker push of the -t that names a registry, nothing loaded; then pulled by ggufpack
    remote = f"{buildkit.registry.host}/qs:pushed"
    pushed = _ggufpack(home, env, "build", "-q", "--engine", "buildkit", "--frontend-image", buildkit.remote,
                       "--push", "-t", remote, str(QUICKSTART))
    assert pushed.returncode == 0, pushed.stderr[-6000:]
    assert pushed.stdout.strip() == ""
    pulled = _ggufpack(home, env, "pull", "-q", "--plain-http", remote)
    assert pulled.returncode == 0, pulled.stderr
    assert _files(Store(home), remote)[0] == local_files

    # the daemon's own image, docker saved to a file and loaded with ggufpack load: the same files
    d.build(QUICKSTART, "-f", str(QUICKSTART / "GGUFPackerfile"), "--build-arg",
            f"BUILDKIT_SYNTAX={buildkit.remote}", tag="qs:saved")
    archive = tmp_path / "saved.tar"
    d.docker("save", "-o", str(archive), "qs:saved")
    other = tmp_path / "other"
    loaded = _ggufpack(other, dict(os.environ), "load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    assert "Loaded image: qs:saved" in loaded.stdout
    saved_files, saved_config = _files(Store(other), "qs:saved")
    assert saved_files == local_files
    assert saved_config["config"].get("Cmd") == local_config["config"].get("Cmd")
