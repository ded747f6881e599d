"""Reproducible builds, and independent OCI tools (skopeo, umoci) reading what we wrote."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from ggufpack.store import Store

from .helpers.builds import (
    NOTES,
    PROMPT,
    do_build,
    have,
    run_cli,
    sample_context,
    skopeo,
    tiny_gguf_bytes,
)

EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_gguf_bytes(tmp_path_factory.mktemp("gguf"), weight_type="Q8_0")


def _scramble(context: Path, *, mtime: int, owner: int) -> None:
    """Give every file of a context other mtimes and (as root) another owner."""
    for path in sorted(context.rglob("*"), reverse=True):
        if os.geteuid() == 0:
            os.chown(path, owner, owner, follow_symlinks=False)
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def _config(home: Path, digest: str) -> dict:
    store = Store(home)
    manifest = store.read_json(digest)
    return store.read_json(manifest["config"]["digest"])


def test_same_inputs_same_digest_across_stores_dirs_mtimes_owners(
    tmp_path: Path, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = sample_context(tmp_path / "a" / "ctx", gguf_bytes)
    second = sample_context(tmp_path / "elsewhere" / "deeper" / "other-name", gguf_bytes)
    _scramble(first, mtime=1_000_000, owner=1234)
    _scramble(second, mtime=1_650_000_000, owner=4321)

    # One build through the library, one through the CLI from another working directory.
    one = do_build(Store(tmp_path / "home1"), first)
    run = run_cli(["build", "-q", "-t", "sample:1", "deeper/other-name"], tmp_path / "home2",
                  cwd=tmp_path / "elsewhere")
    assert run.code == 0, run.err
    assert run.out.strip() == one.descriptor.digest

    config = _config(tmp_path / "home2", one.descriptor.digest)
    assert "created" not in config  # the build time lives in the store index, not the image
    assert all("created" not in h for h in config["history"])
    # Tar headers hold neither the context's mtimes nor its owners.
    store = Store(tmp_path / "home1")
    for layer in one.image.manifest["layers"]:
        data = store.blob_path(layer["digest"]).read_bytes()
        if layer["mediaType"].endswith("gzip"):
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for info in tar:
                assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
                assert not info.pax_headers


def test_source_date_epoch_sets_created_deterministically(
    tmp_path: Path, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = sample_context(tmp_path / "ctx", gguf_bytes)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    plain = do_build(Store(tmp_path / "plain"), context).descriptor.digest

    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    dated = do_build(Store(tmp_path / "dated1"), context).descriptor.digest
    assert do_build(Store(tmp_path / "dated2"), context).descriptor.digest == dated
    assert dated != plain
    config = _config(tmp_path / "dated1", dated)
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert {h["created"] for h in config["history"]} == {"2023-11-14T22:13:20Z"}
    store = Store(tmp_path / "dated1")
    layer = store.read_json(dated)["layers"][0]
    with tarfile.open(store.blob_path(layer["digest"])) as tar:
        assert {info.mtime for info in tar} == {EPOCH}

    # A store whose cache holds the undated build must still give the dated digest, and back.
    assert do_build(Store(tmp_path / "plain"), context).descriptor.digest == dated
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH + 1))
    later = do_build(Store(tmp_path / "plain"), context).descriptor.digest
    assert later not in (plain, dated)
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert do_build(Store(tmp_path / "dated1"), context).descriptor.digest == plain


# -- independent checkers ---------------------------------------------------------------------------

needs_tools = pytest.mark.skipif(not (have("skopeo") and have("umoci")), reason="skopeo and umoci are needed")


def _umoci_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    args = ["umoci", "unpack"]
    if os.geteuid() != 0:
        args.append("--rootless")
    result = subprocess.run([*args, "--image", f"{layout}:{tag}", str(bundle)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return bundle / "rootfs"


def _tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


@needs_tools
def test_skopeo_and_umoci_read_store_and_exports(tmp_path: Path, gguf_bytes: bytes) -> None:
    home = tmp_path / "home"
    context = sample_context(tmp_path / "ctx", gguf_bytes)
    layout, archive = tmp_path / "layout", tmp_path / "image.tar"
    run = run_cli(["build", "-q", "-t", "sample:1", "--output", f"type=oci,dest={layout}",
                   "--output", f"type=oci-archive,dest={archive}", str(context)], home)
    assert run.code == 0, run.err
    digest = run.out.strip()

    inspected = skopeo("inspect", f"oci:{home}:sample:1")
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    assert info["Digest"] == digest
    assert info["Labels"]["gguf.model.architecture"] == "llama"
    assert info["Labels"]["com.example.team"] == "ml"
    raw = json.loads(skopeo("inspect", "--raw", f"oci:{home}:sample:1").stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert raw["annotations"]["gguf.model.architecture"] == "llama"

    copied = tmp_path / "copied"
    result = skopeo("copy", f"oci:{home}:sample:1", f"oci:{copied}:x")
    assert result.returncode == 0, result.stderr
    # skopeo gzips uncompressed layers on the way (its default): same content, another digest.
    # Asked to keep digests, it must accept ours exactly as they are.
    assert json.loads(skopeo("inspect", f"oci:{copied}:x").stdout)["Digest"] != ""
    kept = skopeo("copy", "--preserve-digests", f"oci:{home}:sample:1", f"oci:{tmp_path / 'kept'}:x")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(skopeo("inspect", f"oci:{tmp_path / 'kept'}:x").stdout)["Digest"] == digest

    from_archive = skopeo("inspect", f"oci-archive:{archive}:1")
    assert from_archive.returncode == 0, from_archive.stderr
    assert json.loads(from_archive.stdout)["Digest"] == digest
    assert json.loads(skopeo("inspect", f"oci:{layout}:1").stdout)["Digest"] == digest

    expected = {
        "models": None, "models/tiny.gguf": gguf_bytes, "prompts": None, "prompts/system.txt": PROMPT.encode(),
        "prompts/extra.txt": b"extra\n", "docs": None, "docs/README.md": b"# Tiny\n", "docs/usage": None,
        "docs/usage/run.txt": b"llama-server -m /models/tiny.gguf\n", "notes.txt": NOTES.encode(),
    }
    assert _tree(_umoci_unpack(layout, "1", tmp_path / "bundle1")) == expected
    assert _tree(_umoci_unpack(copied, "x", tmp_path / "bundle2")) == expected
    # umoci's own view of the config matches ours
    umoci_config = json.loads((tmp_path / "bundle1" / "config.json").read_text())
    assert "gguf.model.architecture" in json.dumps(umoci_config["annotations"])
    shutil.rmtree(tmp_path / "bundle1")
