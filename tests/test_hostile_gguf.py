"""Hostile GGUF files: headers that amplify, lie about their data, or carry absurd names and values.

Every case runs in a forked child under an address-space budget and a deadline (``tests/helpers/bounded``)
and goes through what ggufpack does with a GGUF it is handed: read the file or split set (``read_gguf``),
describe it (facts, labels, gguf-packer's config entry and back), and estimate it. Only our own error
types may come out, in bounded time and memory. The regression tests are named for the items of issue 12.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import pytest
from gguf.constants import GGMLQuantizationType, GGUFValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.errors import GGUFPackError
from ggufpack.estimate import estimate, resolve
from ggufpack.estimate.inputs import from_file
from ggufpack.gguf_info import (
    header_from_config_entry,
    model_config_entry,
    model_facts,
    model_labels,
    read_gguf,
    read_header_file,
    split_names,
)
from tests.helpers.bounded import assert_clean, assert_refused, run_bounded
from tests.helpers.ggufmaker import make_gguf, raw_gguf, raw_kv, raw_string, raw_tensor_info

V = GGUFValueType
F32 = int(GGMLQuantizationType.F32)
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def use(path: Path) -> str:
    """What the build, ``list``, ``inspect`` and ``estimate`` do with a GGUF file, in order."""
    headers = read_gguf(path)
    facts = model_facts(headers)
    labels = model_labels(headers, user_labels={})
    entry = json.loads(json.dumps(model_config_entry(headers, cmd_value=path.name, cmd_index=1)))
    assert model_facts(header_from_config_entry(entry)) == facts
    try:
        rows = estimate(from_file(path), resolve([], {}))
    except GGUFPackError as e:  # most mutants are no model llama.cpp knows: that is a clean end too
        return f"{facts.parameters} params, {len(labels)} labels, no estimate: {str(e)[:200]}"
    return f"{facts.parameters} params, {len(labels)} labels, {len(rows)} estimate rows"


def sparse_file(path: Path, head: bytes, size: int) -> Path:
    """``head`` followed by zeros up to ``size`` bytes, the zeros taking no disk."""
    with path.open("wb") as f:
        f.write(head)
        f.truncate(max(size, len(head)))
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", weight_type="F16")


def test_the_real_file_goes_through_everything(tiny_gguf: Path) -> None:
    outcome = assert_clean(run_bounded(use, tiny_gguf, budget_mb=512, seconds=60), allow_ok=True)
    assert outcome.kind == "ok" and "estimate rows" in outcome.value


# --- item 7: header amplification ----------------------------------------------------------------


def test_item07_header_item_count_capped(tmp_path: Path) -> None:
    """One key/value holding 2²⁵ empty arrays (a 384 MiB sparse file) took 170 s and 4.25 GB."""
    n = 1 << 25
    head = raw_gguf([raw_kv("k", V.ARRAY, struct.pack("<IQ", V.ARRAY, n))])
    path = sparse_file(tmp_path / "amplified.gguf", head, len(head) + 12 * n)  # zeros: empty uint8 arrays
    assert_refused(run_bounded(from_file, path, budget_mb=256, seconds=20), "amplified.gguf", "limit")


def test_item07_nested_arrays_capped(tmp_path: Path) -> None:
    """Fewer arrays than the per-array limit, but each one an object: capped across the header."""
    n = 1 << 17
    head = raw_gguf([raw_kv("k", V.ARRAY, struct.pack("<IQ", V.ARRAY, n))])
    path = sparse_file(tmp_path / "nested.gguf", head, len(head) + 12 * n)
    assert_refused(run_bounded(from_file, path, budget_mb=256, seconds=20), "arrays inside arrays")


def test_item07_total_items_capped_across_keys(tmp_path: Path) -> None:
    """Many arrays, each under the per-array limit, add up past the header's limit."""
    n = 1 << 21
    kvs = [raw_kv(f"k{i}", V.ARRAY, struct.pack("<IQ", V.UINT8, n) + bytes(n)) for i in range(5)]
    path = tmp_path / "many.gguf"
    path.write_bytes(raw_gguf(kvs))
    assert_refused(run_bounded(from_file, path, budget_mb=256, seconds=20), "metadata values and array items")


def test_item07_header_size_capped(tmp_path: Path) -> None:
    """Strings each under their own limit, in a header past the header's size limit (a sparse file)."""
    n = 100 << 20
    path = tmp_path / "big.gguf"
    with path.open("wb") as f:
        f.write(raw_gguf(n_kv=3))
        for i in range(3):  # the length fields only: the strings' bytes stay sparse zeros
            f.write(raw_kv(f"k{i}", V.STRING, struct.pack("<Q", n)))
            f.seek(n, os.SEEK_CUR)
        f.truncate(f.tell() + 64)
    assert_refused(run_bounded(from_file, path, budget_mb=768, seconds=60), "MiB")


# --- item 13: echoed values and split-name expansion ---------------------------------------------


def test_item13_long_architecture_string_truncated_in_labels_and_errors(tmp_path: Path) -> None:
    """A 100 MB general.architecture: labels (also manifest annotations) and errors stay a line long."""
    path = make_gguf(tmp_path / "long-arch.gguf", extra_kv={"general.architecture": "A" * (100 << 20)})

    def labels_and_estimate() -> dict[str, int]:
        headers = read_gguf(path)
        sizes = {k: len(v) for k, v in model_labels(headers, user_labels={}).items()}
        try:
            estimate(from_file(path), resolve([], {}))
        except GGUFPackError as e:
            sizes["error"] = len(str(e))
        return sizes

    outcome = assert_clean(run_bounded(labels_and_estimate, budget_mb=1024, seconds=120))
    assert outcome.kind == "ok", outcome
    assert max(outcome.value.values()) <= 4096 and outcome.value["error"] < 1000, outcome.value


def test_item13_shard_count_bomb(tmp_path: Path) -> None:
    """A ``-of-99999`` name listed its 99,998 missing siblings in one message."""
    path = make_gguf(tmp_path / "m.gguf").rename(tmp_path / "m-00001-of-99999.gguf")
    outcome = assert_refused(run_bounded(read_gguf, path, seconds=30), "99998 of the 99999 shards", "missing")
    assert len(outcome.message) < 600, outcome.message[:1000]


def test_item13_split_names_is_the_one_expansion() -> None:
    """The reader, the build's QUANTIZE inputs, the image assembler and ``run`` expand names through this one."""
    assert split_names("d/x-00002-of-00003.gguf") == [f"d/x-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert split_names("x.gguf") is None and split_names("x-1-of-2.gguf") is None
    for nonsense in ("x-00000-of-00003.gguf", "x-00004-of-00003.gguf", "x-00001-of-00000.gguf"):
        with pytest.raises(GGUFPackError, match="makes no sense"):
            split_names(nonsense)
    assert len(split_names("x-00001-of-99999.gguf") or ()) == 99999


def test_item13_run_links_split_models_through_split_names(tmp_path: Path) -> None:
    """``run``'s link farm for split models uses the same expansion: nonsense numbering is our error."""
    from ggufpack.run.image import RunnableImage
    from ggufpack.store import Store

    store = Store(tmp_path / "home")
    first = make_gguf(tmp_path / "s.gguf", split_max_tensors=10)
    names = split_names(first.name) or []
    files = {f"models/{n}": store.import_file(tmp_path / n, move=False) for n in names}
    files["models/x-00001-of-00000.gguf"] = files[f"models/{names[0]}"]
    image = RunnableImage(store, "img", "sha256:" + "0" * 64, ("-m", f"/models/{names[0]}"), files)
    linked = image.host_path(f"/models/{names[0]}")
    assert sorted(p.name for p in linked.parent.iterdir()) == names and linked.name == names[0]
    assert [len(h.tensors) for h in read_gguf(linked)] == [len(h.tensors) for h in read_gguf(first)]
    with pytest.raises(GGUFPackError, match="makes no sense"):
        image.host_path("/models/x-00001-of-00000.gguf")


# --- item 14: tensor data that the file does not hold --------------------------------------------


def _one_tensor_file(path: Path, offset: int, *, size: int = 320, shape: tuple[int, ...] = (4096,)) -> Path:
    head = raw_gguf([raw_kv("general.architecture", V.STRING, raw_string("llama"))],
                    [raw_tensor_info("t.weight", list(shape), F32, offset)])
    return sparse_file(path, head, size)


def test_item14_tensor_data_past_end_of_file_refused(tmp_path: Path) -> None:
    """An offset of 2⁵⁰ in a 320-byte file was labelled "16.38 K params"; such a file cannot load."""
    path = _one_tensor_file(tmp_path / "lies.gguf", 1 << 50)
    assert_refused(run_bounded(use, path, seconds=30), "lies.gguf", "t.weight", "past the end of the file")
    assert_refused(run_bounded(read_header_file, path, seconds=30), "past the end")


def test_item14_truncated_data_refused(tiny_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    data = tiny_gguf.read_bytes()
    header = read_header_file(tiny_gguf)
    end = header.data_offset + max(t.offset + t.n_bytes for t in header.tensors)
    cut.write_bytes(data[: end - 1])
    assert_refused(run_bounded(use, cut, seconds=30), "past the end")
    cut.write_bytes(data[:end])  # only the last tensor's padding gone: every byte of data is there
    assert_clean(run_bounded(use, cut, seconds=60))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([("a", [8], 4)], "not a multiple of the alignment"),
        ([("a", [16], 0), ("b", [8], 32)], "share data bytes"),
        ([("a", [8], 0), ("b", [8], 0)], "share data bytes"),
        ([("a", [1 << 40, 1 << 20], 0)], "past the end"),
        ([("a", [(1 << 62) // 32 * 32], 0)], "past the end"),
    ],
    ids=["unaligned", "overlapping", "same-offset", "huge-dims", "huge-row"],
)
def test_item14_tensor_data_siblings_refused(tmp_path: Path, tensors: list[tuple[str, list[int], int]],
                                              message: str) -> None:
    head = raw_gguf([raw_kv("general.architecture", V.STRING, raw_string("llama"))],
                    [raw_tensor_info(name, shape, F32, offset) for name, shape, offset in tensors])
    path = sparse_file(tmp_path / "bad.gguf", head, 4096)
    assert_refused(run_bounded(use, path, seconds=30), message)


# --- property-based: mutations of a real file, and headers made of random fields ----------------


@HYPOTHESIS
@given(
    mutations=st.lists(st.tuples(st.integers(0, 1 << 16), st.sampled_from([1, 2, 4, 8]), st.integers(0, 2**64 - 1)),
                       min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 1 << 17)),
    sparse_tail=st.sampled_from([0, 0, 1 << 30]),
)
def test_mutated_real_file_only_our_errors(tiny_gguf: Path, mutations: list[tuple[int, int, int]], cut: int | None,
                                            sparse_tail: int) -> None:
    """Overwrite random header bytes (counts, lengths, types, dims, offsets), cut the file, or extend it with
    a gigabyte of sparse zeros (which makes every length plausible against the file size)."""
    data = bytearray(tiny_gguf.read_bytes())
    infos_end = read_header_file(tiny_gguf).infos_end
    for at, width, value in mutations:
        at %= infos_end
        data[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
    if cut is not None:
        del data[cut:]
    with tempfile.TemporaryDirectory() as tmp:
        path = sparse_file(Path(tmp) / "mutant.gguf", bytes(data), len(data) + sparse_tail)
        assert_clean(run_bounded(use, path, budget_mb=768, seconds=60))


_U64 = st.one_of(st.integers(0, 64), st.sampled_from([1 << 20, 1 << 23, (1 << 23) + 1, 1 << 25, 1 << 32, 1 << 50,
                                                      2**63, 2**64 - 1]))
_VALUE_TYPE = st.one_of(st.sampled_from(list(V)), st.integers(0, 2**32 - 1))


@st.composite
def _kv(draw: st.DrawFn) -> bytes:
    key = draw(st.one_of(st.sampled_from(["general.architecture", "llama.block_count", "general.alignment",
                                          "tokenizer.ggml.tokens", "split.count"]), st.text(max_size=8)))
    vtype = draw(_VALUE_TYPE)
    if vtype == V.ARRAY:
        payload = struct.pack("<IQ", draw(_VALUE_TYPE) % 2**32, draw(_U64))
    elif vtype == V.STRING:
        payload = struct.pack("<Q", draw(_U64))
    else:
        payload = draw(st.binary(min_size=0, max_size=8))
    return raw_kv(key, vtype % 2**32, payload)


@st.composite
def _tensor(draw: st.DrawFn) -> bytes:
    dims = draw(st.lists(_U64, max_size=5))
    ggml_type = draw(st.one_of(st.sampled_from([int(t) for t in GGMLQuantizationType]), st.integers(0, 2**32 - 1)))
    return raw_tensor_info(draw(st.text(max_size=8)), dims, ggml_type, draw(_U64))


@HYPOTHESIS
@given(kvs=st.lists(_kv(), max_size=4), tensors=st.lists(_tensor(), max_size=3), n_kv=st.one_of(st.none(), _U64),
       n_tensors=st.one_of(st.none(), _U64), version=st.sampled_from([2, 3, 3, 4, 0x03000000]),
       sparse_tail=st.sampled_from([0, 4096, 1 << 30]))
def test_random_header_fields_only_our_errors(kvs: list[bytes], tensors: list[bytes], n_kv: int | None,
                                              n_tensors: int | None, version: int, sparse_tail: int) -> None:
    head = raw_gguf(kvs, tensors, version=version, n_kv=n_kv, n_tensors=n_tensors)
    with tempfile.TemporaryDirectory() as tmp:
        path = sparse_file(Path(tmp) / "random.gguf", head, len(head) + sparse_tail)
        assert_clean(run_bounded(use, path, budget_mb=768, seconds=60))


@HYPOTHESIS
@given(cut=st.integers(0, 1 << 20))
def test_any_cut_of_the_data_is_refused_or_whole(tiny_gguf: Path, cut: int) -> None:
    """A file cut anywhere is refused, unless the cut only took padding after the last tensor."""
    header = read_header_file(tiny_gguf)
    end = header.data_offset + max(t.offset + t.n_bytes for t in header.tensors)
    data = tiny_gguf.read_bytes()
    cut %= len(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cut.gguf"
        path.write_bytes(data[:cut])
        outcome = run_bounded(use, path, seconds=60)
    if cut < end:
        assert_refused(outcome)
    else:
        assert_clean(outcome)


def test_split_set_of_hostile_shards(tmp_path: Path) -> None:
    """A split set whose second shard lies about its data is refused as a whole, naming that shard."""
    first = make_gguf(tmp_path / "s.gguf", split_max_tensors=10)
    second = Path((split_names(str(first)) or [])[1])
    os.truncate(second, read_header_file(second).data_offset + 1)
    assert_refused(run_bounded(use, first, seconds=60), second.name, "past the end")


def test_long_metadata_strings_leave_the_config_small(tmp_path: Path) -> None:
    """A 70 MB ``general.description`` (over the 64 MiB a pull accepts for a config) builds an image whose
    config holds the string's size only; estimate still reads the model from the config, labels are cut."""
    from ggufpack.estimate.inputs import from_config
    from ggufpack.gguf_info import ElidedString, header_from_config_entry
    from ggufpack.oci.reader import MAX_CONFIG_BYTES
    from tests.helpers.builds import do_build, open_store, write_context

    template = "{{ messages }}" * 4000  # a chat template of 56 KB stays whole
    description = "d" * (70 << 20)
    model = make_gguf(tmp_path / "long.gguf", extra_kv={"general.description": description,
                                                        "tokenizer.chat_template": template})
    context = write_context(tmp_path / "ctx", 'FROM scratch\nCOPY long.gguf /m.gguf\nCMD ["-m", "/m.gguf"]\n',
                            {"long.gguf": model.read_bytes()})
    del description
    store = open_store(tmp_path / "home")
    result = do_build(store, context, tags=("long:1",))
    config = result.image.config
    assert store.blob_path(result.image.manifest["config"]["digest"]).stat().st_size < 1 << 20 < MAX_CONFIG_BYTES
    header = header_from_config_entry(config["config"]["Model"])
    assert header.metadata["general.description"] == ElidedString(70 << 20)
    assert header.metadata["tokenizer.chat_template"] == template
    assert len(config["config"]["Labels"]["gguf.model.description"]) <= 4096
    inputs = from_config(config, "long:1")
    assert inputs.model is not None and inputs.model.metadata["general.description"] == ElidedString(70 << 20)


def test_a_config_over_the_pull_limit_is_refused_at_commit(tmp_path: Path) -> None:
    """A config no pull would accept (here a 65 MiB label) is refused before any ref names the image."""
    from ggufpack.oci.reader import MAX_CONFIG_BYTES
    from tests.helpers.builds import do_build, open_store, write_context

    model = make_gguf(tmp_path / "m.gguf")
    context = write_context(tmp_path / "ctx", 'FROM scratch\nCOPY m.gguf /m.gguf\nCMD ["-m", "/m.gguf"]\n',
                            {"m.gguf": model.read_bytes()})
    store = open_store(tmp_path / "home")
    with pytest.raises(GGUFPackError, match=f"over the {MAX_CONFIG_BYTES >> 20} MiB that a pull accepts"):
        do_build(store, context, tags=("big:1",), labels={"com.example.big": "x" * (MAX_CONFIG_BYTES + 1)})
    assert store.images() == []
