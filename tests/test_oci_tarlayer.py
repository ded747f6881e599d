"""Deterministic tar layers (writing) and safe layer extraction (reading), with real tar tools."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.oci.extract import extract_layer, iter_layer_members
from ggufpack.oci.mediatypes import OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP
from ggufpack.oci.tarlayer import (
    ALIGN_MIN_SIZE,
    ALIGNMENT,
    LayerEntry,
    LayerInfo,
    choose_compression,
    write_layer,
)

MIB = 1 << 20


def _layer(entries: list[LayerEntry], *, compress: bool = False, mtime: int = 0) -> tuple[bytes, LayerInfo]:
    sink = io.BytesIO()
    info = write_layer(entries, sink, compress=compress, mtime=mtime)
    return sink.getvalue(), info


def _model_entries(tmp_path: Path, name: str = "src") -> list[LayerEntry]:
    src = tmp_path / name
    src.mkdir()
    big = src / "model.gguf"
    big.write_bytes(b"GGUF" + os.urandom(3 * MIB))
    return [
        LayerEntry("models", "dir", 0o755),
        LayerEntry("models/model.gguf", "file", 0o644, source=big),
        LayerEntry("models/system.txt", "file", 0o644, data=b"You are helpful.\n"),
        LayerEntry("models/current", "symlink", 0o777, linkname="model.gguf"),
        LayerEntry("models/owned.txt", "file", 0o600, uid=1000, gid=1000, data=b"mine"),
    ]


# --- writing -------------------------------------------------------------------------------------


def test_same_entries_give_same_bytes_whatever_the_files_on_disk(tmp_path: Path) -> None:
    first = _model_entries(tmp_path, "a")
    second_dir = tmp_path / "b"
    shutil.copytree(tmp_path / "a", second_dir)
    os.utime(second_dir / "model.gguf", (1_000_000, 2_000_000))
    os.chmod(second_dir / "model.gguf", 0o600)
    if os.geteuid() == 0:
        os.chown(second_dir / "model.gguf", 1234, 5678)
    second = [
        LayerEntry(e.path, e.kind, e.mode, e.uid, e.gid, source=second_dir / "model.gguf", data=None) if e.source else e
        for e in reversed(first)
    ]
    for compress in (False, True):
        data_a, info_a = _layer(first, compress=compress, mtime=1700000000)
        data_b, info_b = _layer(second, compress=compress, mtime=1700000000)
        assert data_a == data_b
        assert info_a == info_b
        assert info_a.digest == "sha256:" + hashlib.sha256(data_a).hexdigest()
        assert info_a.size == len(data_a)


def test_uncompressed_layer_digest_is_diff_id(tmp_path: Path) -> None:
    data, info = _layer(_model_entries(tmp_path))
    assert info.media_type == OCI_LAYER_TAR
    assert info.digest == info.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert len(data) % 512 == 0 and data.endswith(bytes(1024))


def test_gzip_layer_has_fixed_header_and_wraps_the_same_tar(tmp_path: Path) -> None:
    entries = _model_entries(tmp_path)
    plain, plain_info = _layer(entries)
    packed, info = _layer(entries, compress=True)
    assert info.media_type == OCI_LAYER_TAR_GZIP
    assert packed[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert gzip.decompress(packed) == plain
    assert info.diff_id == plain_info.diff_id
    assert info.digest == "sha256:" + hashlib.sha256(packed).hexdigest()
    assert info.file_offsets == plain_info.file_offsets


def test_headers_hold_only_what_is_given(tmp_path: Path) -> None:
    data, _ = _layer(_model_entries(tmp_path), mtime=1234567890)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "models",
        "models/current",
        "models/model.gguf",
        "models/owned.txt",
        "models/system.txt",
    ]
    for m in members:
        assert m.mtime == 1234567890
        assert (m.uname, m.gname, m.devmajor, m.devminor) == ("", "", 0, 0)
        assert not {"atime", "ctime", "mtime"} & set(m.pax_headers)
    owned = next(m for m in members if m.name == "models/owned.txt")
    assert (owned.uid, owned.gid, owned.mode) == (1000, 1000, 0o600)
    assert members[1].issym() and members[1].linkname == "model.gguf"


def test_pax_records_only_for_what_ustar_cannot_hold() -> None:
    long_dir = "d" * 120
    entries = [
        LayerEntry(f"{long_dir}/{'f' * 90}", "file", 0o644, data=b"prefix split"),
        LayerEntry("n" * 130, "file", 0o644, data=b"pax path"),
        LayerEntry("caf\u00e9.txt", "file", 0o644, data=b"utf-8 name"),
        LayerEntry("link", "symlink", 0o777, linkname="t" * 150),
        LayerEntry("big-ids", "file", 0o644, uid=3_000_000, gid=4_000_000, data=b""),
        LayerEntry("plain", "file", 0o644, data=b"nothing special"),
    ]
    data, _ = _layer(entries)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        got = {m.name: m for m in tar.getmembers()}
    assert set(got[f"{long_dir}/{'f' * 90}"].pax_headers) == set()
    assert set(got["n" * 130].pax_headers) == {"path"}
    assert set(got["caf\u00e9.txt"].pax_headers) == {"path"}
    assert set(got["link"].pax_headers) == {"linkpath"} and got["link"].linkname == "t" * 150
    assert (got["big-ids"].uid, got["big-ids"].gid) == (3_000_000, 4_000_000)
    assert set(got["big-ids"].pax_headers) == {"uid", "gid"}
    assert got["plain"].pax_headers == {}


def test_file_over_8_gib_gets_a_pax_size(tmp_path: Path) -> None:
    """A sparse file is enough: we only look at the header before any data is copied."""
    huge = tmp_path / "huge.gguf"
    with open(huge, "wb") as f:
        f.truncate(8 << 30)
    entry = LayerEntry("huge.gguf", "file", 0o644, source=huge)

    class StopAfterHeader(io.BytesIO):
        def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
            if self.tell() >= 8192:
                raise InterruptedError
            return super().write(b)

    sink = StopAfterHeader()
    with pytest.raises(InterruptedError):
        write_layer([entry], sink, compress=False, mtime=0)
    header = sink.getvalue()
    assert f"size={8 << 30}\n".encode() in header
    with tarfile.open(fileobj=io.BytesIO(header + bytes(8192)), mode="r|") as tar:
        member = tar.next()
    assert member is not None and member.size == 8 << 30


@settings(max_examples=25, deadline=None)
@given(
    before=st.lists(st.tuples(st.integers(1, 140), st.integers(0, 5000)), max_size=4, unique_by=lambda t: t[0]),
    big_size=st.integers(ALIGN_MIN_SIZE, ALIGN_MIN_SIZE + 9000),
    long_name=st.booleans(),
)
def test_big_files_start_aligned(before: list[tuple[int, int]], big_size: int, long_name: bool) -> None:
    content = bytes(range(256)) * (big_size // 256) + b"\x01" * (big_size % 256)
    big_path = ("z" * 150 if long_name else "z") + "/model.gguf"
    entries = [LayerEntry("a" * n, "file", 0o644, data=b"x" * size) for n, size in before]
    entries += [LayerEntry(big_path, "file", 0o644, data=content)]
    entries += [LayerEntry("zz.gguf", "file", 0o644, data=content[::-1])]
    data, info = _layer(entries)
    for path, expected in ((big_path, content), ("zz.gguf", content[::-1])):
        offset, size = info.file_offsets[path]
        assert offset % ALIGNMENT == 0
        assert data[offset : offset + size] == expected
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember(big_path)
        assert member.offset_data == info.file_offsets[big_path][0]
        reader = tar.extractfile(member)
        assert reader is not None and reader.read() == content


def test_gnu_tar_reads_what_we_write(tmp_path: Path) -> None:
    entries = _model_entries(tmp_path)
    entries.append(LayerEntry("deep/" + "p" * 120 + "/\u00fcber.txt", "file", 0o640, data=b"long unicode"))
    entries.append(LayerEntry("deep", "dir", 0o750))
    for compress in (False, True):
        data, _ = _layer(entries, compress=compress, mtime=86400)
        blob = tmp_path / f"layer-{compress}.tar"
        blob.write_bytes(data)
        out = tmp_path / f"gnu-{compress}"
        out.mkdir()
        subprocess.run(["tar", "-x", "-f", str(blob), "-C", str(out)], check=True)
        listing = subprocess.run(
            ["tar", "-t", "-v", "--numeric-owner", "-f", str(blob)], check=True, capture_output=True, text=True
        ).stdout
        assert "1000/1000" in listing and "1970-01-02 00:00" in listing
        assert (out / "models/model.gguf").read_bytes() == (tmp_path / "src/model.gguf").read_bytes()
        assert (out / "models/system.txt").read_bytes() == b"You are helpful.\n"
        assert os.readlink(out / "models/current") == "model.gguf"
        assert (out / "deep" / ("p" * 120) / "\u00fcber.txt").read_bytes() == b"long unicode"
        assert (out / "deep/").stat().st_mode & 0o777 == 0o750
        assert int((out / "models/model.gguf").stat().st_mtime) == 86400


def test_choose_compression(tmp_path: Path) -> None:
    gguf_without_suffix = tmp_path / "weights.bin"
    gguf_without_suffix.write_bytes(b"GGUF\x03\x00\x00\x00")
    text = [LayerEntry("prompt.txt", "file", 0o644, data=b"hello"), LayerEntry("d", "dir", 0o755)]
    assert choose_compression(text) is True
    assert choose_compression([*text, LayerEntry("m.GGUF", "file", 0o644, data=b"xx")]) is False
    assert choose_compression([LayerEntry("w", "file", 0o644, source=gguf_without_suffix)]) is False
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 * MIB + 1)
    assert choose_compression([LayerEntry("big.bin", "file", 0o644, source=big)]) is False


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(path="/abs", kind="file", mode=0o644, data=b""),
        dict(path="a/../b", kind="file", mode=0o644, data=b""),
        dict(path="a//b", kind="file", mode=0o644, data=b""),
        dict(path="a/", kind="dir", mode=0o755),
        dict(path="f", kind="file", mode=0o644),
        dict(path="f", kind="file", mode=0o644, data=b"x", size=3),
        dict(path="f", kind="fifo", mode=0o644),
        dict(path="f", kind="file", mode=0o10644, data=b""),
        dict(path="l", kind="symlink", mode=0o777),
        dict(path="d", kind="dir", mode=0o755, data=b"x"),
    ],
)
def test_invalid_entries_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        LayerEntry(**kwargs)  # type: ignore[arg-type]


def test_duplicate_paths_and_bad_mtime_are_refused() -> None:
    entry = LayerEntry("a", "file", 0o644, data=b"")
    with pytest.raises(UsageError, match="appears twice"):
        _layer([entry, entry])
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        _layer([entry], mtime=-1)


def test_source_that_changes_after_being_listed_fails(tmp_path: Path) -> None:
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + bytes(100))
    entry = LayerEntry("m.gguf", "file", 0o644, source=src)
    src.write_bytes(b"GGUF")
    with pytest.raises(GGUFPackError, match="changed while it was being packed"):
        _layer([entry])


def test_missing_or_special_source_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        LayerEntry("m", "file", 0o644, source=tmp_path / "missing")
    with pytest.raises(UsageError, match="not a regular file"):
        LayerEntry("m", "file", 0o644, source=tmp_path)


# --- reading and extracting ----------------------------------------------------------------------


def test_extract_roundtrip_of_our_layers(tmp_path: Path) -> None:
    entries = _model_entries(tmp_path)
    for compress in (False, True):
        data, _ = _layer(entries, compress=compress, mtime=500)
        media_type = OCI_LAYER_TAR_GZIP if compress else OCI_LAYER_TAR
        blob = tmp_path / "blob"
        blob.write_bytes(data)
        dest = tmp_path / f"out-{compress}"
        extract_layer(blob, dest, media_type)
        assert (dest / "models/model.gguf").read_bytes() == (tmp_path / "src/model.gguf").read_bytes()
        assert os.readlink(dest / "models/current") == "model.gguf"
        assert (dest / "models/owned.txt").stat().st_mode & 0o777 == 0o600
        assert int((dest / "models/system.txt").stat().st_mtime) == 500
        kinds = {m.path: m.kind for m, _ in iter_layer_members(io.BytesIO(data), media_type)}
        assert kinds == {
            "models": "dir",
            "models/current": "symlink",
            "models/model.gguf": "file",
            "models/owned.txt": "file",
            "models/system.txt": "file",
        }


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], *, compress: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if compress else "w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in members:
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def _file(name: str, content: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), content


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def test_whiteouts_apply_across_layers(tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    lower = _tar([_file("a/x"), _file("a/y"), _file("b/old"), _file("b/sub/older"), _file("c/keep")])
    upper = _tar(
        [
            _file("a/.wh.x"),
            _file("b/fresh", b"new"),
            _file("b/.wh..wh..opq"),
            _file("c/.wh.missing"),
            _file("gone/.wh.nothing"),
        ]
    )
    extract_layer(io.BytesIO(lower), dest, OCI_LAYER_TAR)
    extract_layer(io.BytesIO(upper), dest, OCI_LAYER_TAR)
    found = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    assert found == ["a", "a/y", "b", "b/fresh", "c", "c/keep"]


def test_later_member_replaces_earlier_one_in_the_same_layer(tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    directory = tarfile.TarInfo("p")
    directory.type, directory.mode = tarfile.DIRTYPE, 0o500
    gone = tarfile.TarInfo("q")
    gone.type = tarfile.DIRTYPE
    extract_layer(io.BytesIO(_tar([(directory, None), _file("p", b"file now"), (gone, None)])), dest, OCI_LAYER_TAR)
    extract_layer(io.BytesIO(_tar([(gone, None), _file(".wh.q")])), dest, OCI_LAYER_TAR)
    assert (dest / "p").read_bytes() == b"file now"
    assert (dest / "q").is_dir()


def test_upper_layer_replaces_files_dirs_and_symlinks(tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    extract_layer(io.BytesIO(_tar([_file("p/q"), _special("s", tarfile.SYMTYPE, "p")])), dest, OCI_LAYER_TAR)
    extract_layer(io.BytesIO(_tar([_file("p", b"now a file"), _file("s", b"no longer a link")])), dest, OCI_LAYER_TAR)
    assert (dest / "p").read_bytes() == b"now a file"
    assert not (dest / "s").is_symlink() and (dest / "s").read_bytes() == b"no longer a link"


HOSTILE = {
    "dotdot": [_file("../evil")],
    "dotdot-inside": [_file("a/../../evil")],
    "absolute": [_file("/tmp/evil")],
    "symlink-absolute": [_special("link", tarfile.SYMTYPE, "/etc")],
    "symlink-dotdot": [_special("a/link", tarfile.SYMTYPE, "../../outside")],
    "symlink-chain": [_special("self", tarfile.SYMTYPE, "."), _special("up", tarfile.SYMTYPE, "self/..")],
    "symlink-chain-later": [
        _special("up", tarfile.SYMTYPE, "self/.."),
        _special("self", tarfile.SYMTYPE, "."),
    ],
    "write-through-symlink": [_special("d", tarfile.SYMTYPE, "sub"), _file("sub/ok"), _file("d/evil")],
    "hardlink-outside": [_special("h", tarfile.LNKTYPE, "../outside/secret")],
    "hardlink-absolute": [_special("h", tarfile.LNKTYPE, "/etc/passwd")],
    "hardlink-to-symlink": [_special("l", tarfile.SYMTYPE, "x"), _special("h", tarfile.LNKTYPE, "l")],
    "hardlink-missing": [_special("h", tarfile.LNKTYPE, "nothing")],
    "char-device": [_special("null", tarfile.CHRTYPE)],
    "block-device": [_special("sda", tarfile.BLKTYPE)],
    "fifo": [_special("pipe", tarfile.FIFOTYPE)],
    "whiteout-dotdot": [_file("a/.wh..")],
}

OFFENDER = {
    "dotdot": "../evil",
    "dotdot-inside": "a/../../evil",
    "absolute": "/tmp/evil",
    "symlink-absolute": "link",
    "symlink-dotdot": "a/link",
    "symlink-chain": "up",
    "symlink-chain-later": "up",
    "write-through-symlink": "d/evil",
    "hardlink-outside": "h",
    "hardlink-absolute": "h",
    "hardlink-to-symlink": "h",
    "hardlink-missing": "h",
    "char-device": "null",
    "block-device": "sda",
    "fifo": "pipe",
    "whiteout-dotdot": "a/.wh..",
}


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_are_refused(tmp_path: Path, case: str, compress: bool) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    dest = tmp_path / "root"
    blob = _tar(HOSTILE[case], compress=compress)
    media_type = OCI_LAYER_TAR_GZIP if compress else OCI_LAYER_TAR
    with pytest.raises(GGUFPackError) as caught:
        extract_layer(io.BytesIO(blob), dest, media_type)
    assert repr(OFFENDER[case]) in str(caught.value)
    assert sorted(os.listdir(outside)) == ["secret"]
    assert not (tmp_path / "evil").exists()
    for path in dest.rglob("*"):
        if path.is_symlink():
            resolved = path.resolve()
            assert resolved == dest.resolve() or dest.resolve() in resolved.parents


def test_upper_symlink_that_redirects_a_lower_one_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    extract_layer(io.BytesIO(_tar([_file("b/f"), _special("a", tarfile.SYMTYPE, "b/..")])), dest, OCI_LAYER_TAR)
    upper = _tar([_special("b", tarfile.SYMTYPE, ".")])
    with pytest.raises(GGUFPackError, match="outside the image root"):
        extract_layer(io.BytesIO(upper), dest, OCI_LAYER_TAR)
    assert not (dest / "a").is_symlink()


def test_corrupt_and_unknown_layers_are_clear_errors(tmp_path: Path) -> None:
    good = _tar([_file("a", b"y" * 100_000)], compress=True)
    with pytest.raises(GGUFPackError, match="corrupt or truncated"):
        extract_layer(io.BytesIO(good[: len(good) // 2]), tmp_path / "r", OCI_LAYER_TAR_GZIP)
    with pytest.raises(GGUFPackError, match="only tar and tar\\+gzip"):
        extract_layer(io.BytesIO(good), tmp_path / "r", "application/vnd.oci.image.layer.v1.tar+zstd")
