"""``ggufpack load``: OCI layout and docker archives into the store, checked as a pull is.

Real archives: the quickstart built here, exported (``build --output type=oci-archive``), copied by skopeo to
``oci-archive:`` and ``docker-archive:`` and loaded back (as FILE, ``-i FILE`` and stdin): the same files and
config as the local build. Hostile archives (``..`` and absolute names, links out, a blob that does not match
its name, a huge manifest) are refused with our error and leave the store exactly as it was.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ggufpack.store import Store
from tests.helpers.builds import cli_main, have, image_tree, skopeo

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "Packerfile.samples" / "quickstart"


def _manifest(store: Store, ref: str) -> dict[str, Any]:
    return json.loads(store.read_blob(store.resolve(ref).descriptor.digest))


def _image(store: Store, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
    manifest = _manifest(store, ref)
    return image_tree(store, manifest), json.loads(store.read_blob(manifest["config"]["digest"]))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(home, the quickstart as an OCI archive) from a local build."""
    import subprocess
    import sys

    from tests.helpers.builds import cli_env

    work = tmp_path_factory.mktemp("load")
    home, archive = work / "home", work / "own.tar"
    subprocess.run([sys.executable, "-m", "ggufpack", "build", "-q", "-t", "qs:local", str(QUICKSTART),
                    "--output", f"type=oci-archive,dest={archive}"], env=cli_env(home), check=True, timeout=300)
    return home, archive


def _state(home: Path) -> tuple[bytes, list[str], list[str]]:
    ingest = home / "ingest"
    return ((home / "index.json").read_bytes(), sorted(p.name for p in (home / "blobs" / "sha256").iterdir()),
            sorted(p.name for p in ingest.iterdir()) if ingest.is_dir() else [])


def test_own_oci_archive_loads_under_a_given_tag(built: tuple[Path, Path], tmp_path: Path, capsys: Any,
                                                monkeypatch: Any) -> None:
    home, archive = built
    target = tmp_path / "home"
    # our export names only the tag ("local"): -t gives the image its name
    refused = cli_main(["load", str(archive)], target, capsys, monkeypatch)
    assert refused.code == 2 and "-t NAME:TAG" in refused.err
    result = cli_main(["load", "-t", "qs:again", str(archive)], target, capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "Loaded image: qs:again" in result.out
    source, loaded = Store(home), Store(target)
    assert _manifest(loaded, "qs:again") == _manifest(source, "qs:local")  # the very manifest
    assert _image(loaded, "qs:again") == _image(source, "qs:local")
    listing = cli_main(["list"], target, capsys, monkeypatch)
    assert "again" in listing.out


@pytest.mark.skipif(not have("skopeo"), reason="needs skopeo")
@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_skopeo_archives_load_as_the_same_image(built: tuple[Path, Path], tmp_path: Path, transport: str,
                                                capsys: Any, monkeypatch: Any) -> None:
    home, archive = built
    copied = tmp_path / f"{transport}.tar"
    proc = skopeo("copy", f"oci-archive:{archive}:local", f"{transport}:{copied}:qs:sk")
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / "home"
    if transport == "oci-archive":
        result = cli_main(["load", str(copied)], target, capsys, monkeypatch)
    else:
        result = cli_main(["load", "-i", str(copied)], target, capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "Loaded image: qs:sk" in result.out  # skopeo's docker.io/library/qs:sk, in docker's spelling
    source, loaded = Store(home), Store(target)
    tree, config = _image(loaded, "qs:sk")
    local_tree, local_config = _image(source, "qs:local")
    assert tree == local_tree
    assert config == local_config
    assert _manifest(loaded, "qs:sk")["config"]["digest"] == _manifest(source, "qs:local")["config"]["digest"]
    # loaded twice (the second time from stdin): the same image, nothing new
    again = cli_main(["inspect", "--format", "json", "qs:sk"], target, capsys, monkeypatch)
    assert again.code == 0, again.err


def test_load_from_stdin(built: tuple[Path, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers.builds import cli_env

    home, archive = built
    target = tmp_path / "home"
    with archive.open("rb") as stdin:
        proc = subprocess.run([sys.executable, "-m", "ggufpack", "load", "-t", "qs:stdin"], stdin=stdin,
                              env=cli_env(target), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _image(Store(target), "qs:stdin") == _image(Store(home), "qs:local")


# -- hostile archives ------------------------------------------------------------------------------------------


def _tar(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """(name, data or None, symlink target or None) → tar bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                assert data is not None
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _own_members(archive: Path) -> list[tuple[str, bytes | None, str | None]]:
    with tarfile.open(archive) as tar:
        return [(m.name, tar.extractfile(m).read(), None) for m in tar if m.isfile()]  # type: ignore[union-attr]


def _hostile_cases(archive: Path) -> dict[str, tuple[bytes, str]]:
    members = _own_members(archive)
    blob = next(m for m in members if m[0].startswith("blobs/sha256/"))
    index = json.loads(next(m for m in members if m[0] == "index.json")[1] or b"")
    huge_index = dict(index, manifests=[dict(index["manifests"][0], size=1 << 40)])
    return {
        "dotdot": (_tar([*members, ("../escape", b"x", None)]), "outside the archive"),
        "dotdot-inner": (_tar([*members, ("blobs/../../escape", b"x", None)]), "outside the archive"),
        "absolute": (_tar([*members, ("/tmp/ggufpack-load-escape", b"x", None)]), "outside the archive"),
        "link-out": (_tar([*members, ("blobs/sha256/evil", None, "../../../etc/passwd")]), "outside the archive"),
        "link-absolute": (_tar([*members, ("evil", None, "/etc/passwd")]), "outside the archive"),
        "bad-digest": (_tar([m if m is not blob else (m[0], (m[1] or b"") + b"!", None) for m in members]),
                       "not what its name says"),
        "huge-index": (_tar([*(m for m in members if m[0] != "index.json"),
                             ("index.json", b" " * (5 << 20), None)]), "more than the"),
        "huge-manifest": (_tar([*(m for m in members if m[0] != "index.json"),
                                ("index.json", json.dumps(huge_index).encode(), None)]), "more than the"),
        "link-loop": (_tar([*members, ("a", None, "b"), ("b", None, "a")]), "not a file of the archive"),
        "not-a-tar": (b"hello" * 1000, "not a tar archive"),
        "missing-blob": (_tar([m for m in members if m is not blob]), "not in the archive"),
    }


def test_hostile_archives_are_refused_and_change_nothing(built: tuple[Path, Path], tmp_path: Path, capsys: Any,
                                                         monkeypatch: Any) -> None:
    _, archive = built
    target = tmp_path / "home"
    assert cli_main(["load", "-t", "qs:ok", str(archive)], target, capsys, monkeypatch).code == 0
    before = _state(target)
    for name, (data, message) in _hostile_cases(archive).items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(data)
        result = cli_main(["load", "-t", "qs:hostile", str(path)], target, capsys, monkeypatch)
        assert result.code != 0, name
        assert result.err.startswith("error: ") and message in result.err, (name, result.err)
        assert "Traceback" not in result.err
        assert _state(target) == before, name
    assert not Path("/tmp/ggufpack-load-escape").exists()
    assert not (tmp_path / "escape").exists()


def test_docker_archive_shared_layer_links_resolve(built: tuple[Path, Path], tmp_path: Path, capsys: Any,
                                                   monkeypatch: Any) -> None:
    """``docker save`` links a layer two images share (``<id>/layer.tar -> ../<other>/layer.tar``); a link
    inside the archive is followed, a chain of them too, a loop is refused."""
    if not have("skopeo"):
        pytest.skip("needs skopeo")
    _, archive = built
    copied = tmp_path / "d.tar"
    assert skopeo("copy", f"oci-archive:{archive}:local", f"docker-archive:{copied}:qs:dk").returncode == 0
    with tarfile.open(copied) as tar:
        assert any(m.issym() for m in tar)  # skopeo's docker archive links layer.tar as docker save does
    target = tmp_path / "home"
    assert cli_main(["load", str(copied)], target, capsys, monkeypatch).code == 0
    assert Store(target).resolve("qs:dk")


@pytest.mark.skipif(not have("skopeo"), reason="needs skopeo")
def test_tampered_docker_archives_change_nothing(built: tuple[Path, Path], tmp_path: Path, capsys: Any,
                                                 monkeypatch: Any) -> None:
    """A docker archive's config must hash to the image ID its name says, a layer tar to its diff_id."""
    _, archive = built
    copied = tmp_path / "d.tar"
    assert skopeo("copy", f"oci-archive:{archive}:local", f"docker-archive:{copied}:qs:dk").returncode == 0
    with tarfile.open(copied) as tar:
        members = [(m.name, tar.extractfile(m).read() if m.isfile() else None,  # type: ignore[union-attr]
                    m.linkname if m.issym() else None) for m in tar if not m.isdir()]
    doc = json.loads(next(data for name, data, _ in members if name == "manifest.json") or b"")
    config_name, layer_name = doc[0]["Config"], doc[0]["Layers"][-1]
    layer_file = next(link for name, _, link in members if name == layer_name) or layer_name
    layer_file = layer_file.removeprefix("../")

    def tampered(target: str) -> bytes:
        return _tar([(n, (d or b"") + b"\0" * 1024 if n == target else d, lk) for n, d, lk in members])

    target = tmp_path / "home"
    assert cli_main(["load", "-t", "qs:ok", str(archive)], target, capsys, monkeypatch).code == 0
    before = _state(target)
    for name, data, message in [("config", tampered(config_name), "not the image ID"),
                                ("layer", tampered(layer_file), "diff_id")]:
        path = tmp_path / f"{name}.tar"
        path.write_bytes(data)
        result = cli_main(["load", str(path)], target, capsys, monkeypatch)
        assert result.code == 1 and message in result.err, (name, result.err)
        assert _state(target) == before, name
