"""Image config and manifest bodies, checked by umoci and skopeo on a real OCI layout."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ggufpack.errors import UsageError
from ggufpack.oci import mediatypes as mt
from ggufpack.oci.descriptor import Descriptor, canonical_json
from ggufpack.oci.image import (
    build_image_config,
    build_manifest,
    history_entry,
    json_blob,
    rfc3339,
    source_date_epoch,
)
from ggufpack.oci.tarlayer import LayerEntry, choose_compression, write_layer

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def _config(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        architecture="amd64",
        os="linux",
        diff_ids=[DIGEST_A],
        history=[history_entry("ADD model.gguf /"), history_entry('CMD ["-m"]', empty_layer=True)],
        config={"Cmd": ["-m", "/model.gguf"], "Labels": {"k": "v"}},
    )
    args.update(overrides)
    return build_image_config(**args)


def test_image_config_shape() -> None:
    body = _config()
    assert body == {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["-m", "/model.gguf"], "Labels": {"k": "v"}},
        "rootfs": {"type": "layers", "diff_ids": [DIGEST_A]},
        "history": [{"created_by": "ADD model.gguf /"}, {"created_by": 'CMD ["-m"]', "empty_layer": True}],
    }
    assert "created" not in body
    assert _config(created="1970-01-01T00:00:00Z")["created"] == "1970-01-01T00:00:00Z"


def test_image_config_is_deterministic_and_detached_from_inputs() -> None:
    inner = {"Labels": {"k": "v"}}
    body = _config(config=inner)
    inner["Labels"]["k"] = "changed"
    assert body["config"]["Labels"]["k"] == "v"
    assert canonical_json(_config()) == canonical_json(_config())


def test_history_must_match_layers() -> None:
    with pytest.raises(ValueError, match="2 diff_ids"):
        _config(diff_ids=[DIGEST_A, DIGEST_B])


def test_history_entry_fields() -> None:
    assert history_entry("ARG x", empty_layer=True, created="2024-01-01T00:00:00Z", comment="c") == {
        "created_by": "ARG x",
        "created": "2024-01-01T00:00:00Z",
        "comment": "c",
        "empty_layer": True,
    }
    assert history_entry("COPY a b") == {"created_by": "COPY a b"}


def test_manifest_shape() -> None:
    config = Descriptor(mt.OCI_CONFIG, DIGEST_A, 10)
    layer = Descriptor(mt.OCI_LAYER_TAR, DIGEST_B, 20)
    body = build_manifest(config, [layer], {"org.opencontainers.image.title": "m"})
    assert body == {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": DIGEST_A, "size": 10},
        "layers": [{"mediaType": mt.OCI_LAYER_TAR, "digest": DIGEST_B, "size": 20}],
        "annotations": {"org.opencontainers.image.title": "m"},
    }
    bare = build_manifest(config, [], {}, artifact_type=mt.MODELPACK_ARTIFACT)
    assert "annotations" not in bare and bare["artifactType"] == mt.MODELPACK_ARTIFACT


def test_timestamps() -> None:
    assert source_date_epoch({}) is None
    assert source_date_epoch({"SOURCE_DATE_EPOCH": ""}) is None
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "1700000000"}) == 1700000000
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        source_date_epoch({"SOURCE_DATE_EPOCH": "yesterday"})
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1700000000) == "2023-11-14T22:13:20Z"


# --- a real OCI layout, read by umoci and skopeo -----------------------------------------------------


def _write_blob(layout: Path, data: bytes, digest: str) -> None:
    blob = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)


def _build_layout(tmp_path: Path, model_bytes: bytes | None = None) -> tuple[Path, Path, Descriptor]:
    """A two-layer image: a gzip layer of small files, an uncompressed layer with a GGUF."""
    src = tmp_path / "context"
    src.mkdir(parents=True)
    (src / "model.gguf").write_bytes(model_bytes or b"GGUF" + os.urandom(2 << 20))
    small = [
        LayerEntry("etc", "dir", 0o755),
        LayerEntry("etc/system.txt", "file", 0o644, data=b"Be brief.\n"),
    ]
    model = [
        LayerEntry("models", "dir", 0o755),
        LayerEntry("models/model.gguf", "file", 0o644, source=src / "model.gguf"),
        LayerEntry("models/default.gguf", "symlink", 0o777, linkname="model.gguf"),
    ]
    layout = tmp_path / "layout"
    layers, diff_ids = [], []
    for entries in (small, model):
        sink = io.BytesIO()
        info = write_layer(entries, sink, compress=choose_compression(entries), mtime=0)
        _write_blob(layout, sink.getvalue(), info.digest)
        layers.append(info.descriptor())
        diff_ids.append(info.diff_id)
    assert [d.media_type for d in layers] == [mt.OCI_LAYER_TAR_GZIP, mt.OCI_LAYER_TAR]
    config = build_image_config(
        architecture="amd64",
        os="linux",
        diff_ids=diff_ids,
        history=[history_entry("CAT system.txt"), history_entry("ADD model.gguf")],
        config={"Cmd": ["-m", "/models/model.gguf"], "Labels": {"gguf.model.architecture": "llama"}},
        created=rfc3339(0),
    )
    config_bytes, config_desc = json_blob(config, mt.OCI_CONFIG)
    _write_blob(layout, config_bytes, config_desc.digest)
    manifest = build_manifest(config_desc, layers, {"gguf.model.architecture": "llama"})
    manifest_bytes, manifest_desc = json_blob(manifest, mt.OCI_MANIFEST)
    _write_blob(layout, manifest_bytes, manifest_desc.digest)
    ref = Descriptor(
        mt.OCI_MANIFEST, manifest_desc.digest, manifest_desc.size, {"org.opencontainers.image.ref.name": "v1"}
    )
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}))
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [ref.to_json()]}
    (layout / "index.json").write_bytes(canonical_json(index))
    return layout, src, manifest_desc


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed (apt-get install umoci)")
def test_umoci_unpacks_our_image(tmp_path: Path) -> None:
    layout, src, _ = _build_layout(tmp_path)
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle)],
        check=True,
        capture_output=True,
    )
    rootfs = bundle / "rootfs"
    assert (rootfs / "models/model.gguf").read_bytes() == (src / "model.gguf").read_bytes()
    assert os.readlink(rootfs / "models/default.gguf") == "model.gguf"
    assert (rootfs / "etc/system.txt").read_bytes() == b"Be brief.\n"
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["args"] == ["-m", "/models/model.gguf"]


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (apt-get install skopeo)")
def test_skopeo_inspects_our_image(tmp_path: Path) -> None:
    layout, _, manifest_desc = _build_layout(tmp_path)
    out = subprocess.run(["skopeo", "inspect", f"oci:{layout}:v1"], check=True, capture_output=True, text=True).stdout
    info = json.loads(out)
    assert info["Digest"] == manifest_desc.digest
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Labels"] == {"gguf.model.architecture": "llama"}
    assert len(info["Layers"]) == 2
    # skopeo copy verifies every blob digest on the way.
    subprocess.run(
        ["skopeo", "copy", f"oci:{layout}:v1", f"oci:{tmp_path / 'copy'}:v1"], check=True, capture_output=True
    )


def test_same_inputs_give_the_same_manifest_digest(tmp_path: Path) -> None:
    model = b"GGUF" + os.urandom(2 << 20)
    first = _build_layout(tmp_path / "one", model)[2]
    second = _build_layout(tmp_path / "two", model)[2]
    assert first == second
    blobs = sorted(p.name for p in (tmp_path / "one/layout/blobs/sha256").iterdir())
    assert blobs == sorted(p.name for p in (tmp_path / "two/layout/blobs/sha256").iterdir())
