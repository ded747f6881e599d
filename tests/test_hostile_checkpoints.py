"""Hostile checkpoints and tokenizers: what a cloned or downloaded model directory can hold to escape it,
exhaust memory, or print what it should not.

Every case converts through the public API (``ggufpack.convert.convert``, what ``CONVERT`` and
``ggufpack convert`` call) in a forked child under an address-space budget and a deadline
(``tests/helpers/bounded``): only our own error types may come out, in bounded time and memory. The
regression tests are named for the items of issue 12; the property-based ones mutate real tiny
checkpoints made with transformers (config.json, safetensors headers, index files, tokenizer.json,
tokenizer_config.json's added tokens, tokenizer.model, adapter_config.json).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.convert import convert
from tests.helpers.bounded import Outcome, assert_clean, assert_refused, run_bounded
from tests.helpers.tiny_lora import make_tiny_lora
from tests.helpers.tiny_spm import save_spm_tokenizer
from tests.helpers.tinymodels import edit_json, make_tiny_llama

HYPOTHESIS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
#: the number /etc/passwd's first 8 bytes made in the reported message
ROOT_NUMBER = str(struct.unpack("<Q", b"root:x:0")[0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama checkpoint with a byte-level BPE tokenizer (tokenizer.json)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", vocab_size=640)


@pytest.fixture(scope="module")
def spm(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with a SentencePiece tokenizer (tokenizer.model, added tokens in tokenizer_config.json)."""
    model = tmp_path_factory.mktemp("spm") / "model"
    shutil.copytree(tiny, model)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    ids = save_spm_tokenizer(model, "llama", json.loads((model / "config.json").read_text())["vocab_size"])
    for name in ("config.json", "generation_config.json"):
        edit_json(model / name, bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=None)
    return model


@pytest.fixture(scope="module")
def adapter(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lora(tiny, tmp_path_factory.mktemp("lora") / "adapter")


@contextmanager
def copy_of(model: Path) -> Iterator[Path]:
    """A scratch copy of ``model`` (for hypothesis examples, which cannot take function-scoped fixtures)."""
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "model"
        shutil.copytree(model, dest, symlinks=True)
        yield dest


def convert_bounded(src: Path, *, budget_mb: int = 768, seconds: float = 120, **kwargs: Any) -> Outcome:
    """``convert(src, <scratch>.gguf)`` in a bounded child; the output goes beside ``src``."""
    return run_bounded(convert, src, src.parent / "out.gguf", budget_mb=budget_mb, seconds=seconds, **kwargs)


def tensor_names(path: Path) -> list[str]:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return [k for k in json.loads(path.read_bytes()[8 : 8 + n]) if k != "__metadata__"]


def write_index(model: Path, weight_map: object) -> None:
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_the_real_checkpoints_convert(tiny: Path, spm: Path, adapter: Path, tmp_path: Path) -> None:
    for model in (tiny, spm):
        with copy_of(model) as src:
            assert convert_bounded(src).kind == "ok"
    with copy_of(adapter) as src:
        assert run_bounded(convert, src, tmp_path / "a.gguf", model_class="lora", base=tiny, seconds=120).kind == "ok"


# --- item 5: files outside the checkpoint ---------------------------------------------------------


@pytest.mark.parametrize("shard", ["/etc/passwd", "../../x", "..", ".", "", "sub/model.safetensors",
                                   "a\\b.safetensors", "x\0.safetensors", "OUTSIDE", ["model.safetensors"], 7, None])
def test_item05_shard_name_outside_checkpoint_refused(tiny: Path, tmp_path: Path, shard: object) -> None:
    """model.safetensors.index.json named /etc/passwd and printed a number made of its first bytes."""
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    (model / "sub").mkdir()
    shutil.copy(model / "model.safetensors", model / "sub" / "model.safetensors")
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    name = str(outside) if shard == "OUTSIDE" else shard
    write_index(model, dict.fromkeys(tensor_names(model / "model.safetensors"), name))
    outcome = assert_refused(convert_bounded(model), "index.json", "not a plain file name")
    assert ROOT_NUMBER not in outcome.message and "root:x" not in outcome.message


@pytest.mark.parametrize("linked", ["model.safetensors", "chat_template.jinja", "tokenizer.json", "config.json",
                                    "README.md"])
def test_item05_shard_symlink_leaving_checkout_refused(tiny: Path, tmp_path: Path, linked: str) -> None:
    """A committed link to a file outside the checkout (a shard, or a template gguf-py would embed) is refused."""
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    outside = tmp_path / "elsewhere" / linked
    outside.parent.mkdir()
    shutil.move(model / linked, outside)
    (model / linked).symlink_to(outside)
    assert_refused(convert_bounded(model), linked, "outside the checkpoint")


def test_item05_links_that_stay_inside_are_followed(tiny: Path, tmp_path: Path) -> None:
    """Links inside the checkpoint, a Hugging Face cache snapshot's links into its blobs, and links into a root
    the caller vouches for (the build's store) all convert."""
    inside = tmp_path / "inside"
    shutil.copytree(tiny, inside)
    (inside / "real").mkdir()
    shutil.move(inside / "model.safetensors", inside / "real" / "weights.safetensors")
    (inside / "model.safetensors").symlink_to("real/weights.safetensors")
    assert convert_bounded(inside).kind == "ok"

    snapshot = tmp_path / "hub" / "models--x--tiny" / "snapshots" / "0123abc"
    blobs = tmp_path / "hub" / "models--x--tiny" / "blobs"
    shutil.copytree(tiny, snapshot)
    blobs.mkdir()
    for i, path in enumerate(sorted(snapshot.iterdir())):
        shutil.move(path, blobs / f"blob{i}")
        path.symlink_to(Path("../../blobs") / f"blob{i}")
    assert convert_bounded(snapshot).kind == "ok"

    store, staged = tmp_path / "store", tmp_path / "staged"
    shutil.copytree(tiny, store)
    staged.mkdir()
    for path in store.iterdir():
        (staged / path.name).symlink_to(path.resolve())
    assert_refused(convert_bounded(staged), "outside the checkpoint")
    assert convert_bounded(staged, link_roots=(store,)).kind == "ok"


def test_item05_absurd_safetensors_header_length_not_echoed(tiny: Path, tmp_path: Path) -> None:
    """A "safetensors" file that is something else: a clear error that does not print its first bytes."""
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    (model / "model.safetensors").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    outcome = assert_refused(convert_bounded(model), "not a safetensors file")
    assert ROOT_NUMBER not in outcome.message and "root:x" not in outcome.message


def test_item05_special_files_refused_without_waiting(tiny: Path, tmp_path: Path) -> None:
    """A FIFO (or a link to one) never blocks the converter: it is refused before anything is opened."""
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    os.mkfifo(model / "tokenizer.model")
    assert_refused(convert_bounded(model, seconds=20), "tokenizer.model", "neither a file nor a directory")


def test_item05_pooling_module_path_stays_inside(tiny: Path, tmp_path: Path) -> None:
    """sentence-transformers' modules.json names the pooling module's directory: no path out of the model."""
    from tests.helpers.tiny_gpt2_bert import make_tiny_bert

    model = make_tiny_bert(tmp_path / "bert")
    modules = json.loads((model / "modules.json").read_text())
    for module in modules:
        if module["type"].endswith("Pooling"):
            module["path"] = "../../../etc"
    (model / "modules.json").write_text(json.dumps(modules))
    assert_refused(convert_bounded(model), "modules.json", "not a relative path inside the model directory")


# --- item 6: sizes that drive allocations ---------------------------------------------------------


@pytest.mark.parametrize("value", [10**9, 10**30, 1e300, float("inf")], ids=["1e9", "1e30", "float", "inf"])
def test_item06_num_hidden_layers_bomb_bounded(tiny: Path, tmp_path: Path, value: object) -> None:
    """``num_hidden_layers: 10**9`` built per-layer tables of a billion entries before any tensor was missed."""
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    edit_json(model / "config.json", num_hidden_layers=value)
    assert_refused(convert_bounded(model, budget_mb=512, seconds=60), "lacks layers", "num_hidden_layers")


@pytest.mark.parametrize("token_id", ["300000000", "-5", "4194304", "99999999999999999999"])
def test_item06_sentencepiece_added_token_id_bomb_bounded(spm: Path, tmp_path: Path, token_id: str) -> None:
    """An added token at id 3×10⁸ padded the vocabulary to that length (gigabytes) before the size check."""
    model = tmp_path / "model"
    shutil.copytree(spm, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.setdefault("added_tokens_decoder", {})[token_id] = {"content": "<bomb>", "special": True}
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    assert_refused(convert_bounded(model, budget_mb=512, seconds=60), "outside the model's vocabulary")


@pytest.mark.parametrize("token_id", [300_000_000, -5])
def test_item06_bpe_added_token_id_bounded(tiny: Path, tmp_path: Path, token_id: int) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    data = json.loads((model / "tokenizer.json").read_text())
    data["added_tokens"].append({"id": token_id, "content": "<bomb>", "special": True})
    (model / "tokenizer.json").write_text(json.dumps(data))
    assert_refused(convert_bounded(model, budget_mb=512, seconds=60), "outside the model's vocabulary")


@pytest.mark.parametrize(("vocab_size", "message"), [(300_000_000, "config.json implies [300000000, 64]"),
                                                     ("640", "vocab_size"), (0, "vocab_size"), (True, "vocab_size")])
def test_item06_vocab_size_checked(tiny: Path, tmp_path: Path, vocab_size: object, message: str) -> None:
    """The vocab_size that pads the token list is checked against the embeddings before any padding."""
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    edit_json(model / "config.json", vocab_size=vocab_size)
    assert_refused(convert_bounded(model, budget_mb=512, seconds=60), message)


def test_item06_oversized_small_file_refused(tiny: Path, tmp_path: Path) -> None:
    """A file gguf-py or we read whole (here a 10 GB sparse merges.txt) is refused by its size, unread."""
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    with (model / "merges.txt").open("wb") as f:
        f.truncate(10 << 30)
    assert_refused(convert_bounded(model, budget_mb=256, seconds=30), "merges.txt", "MiB")


@pytest.mark.parametrize("pattern", ["(a+)+$", "(q|qq)*_proj", "x" * 2000])
def test_item06_sibling_lora_patterns_match_in_bounded_time(tiny: Path, adapter: Path, tmp_path: Path,
                                                            pattern: str) -> None:
    """rank_pattern keys are matched against every module name: a backtracking one would hang the conversion."""
    src = tmp_path / "adapter"
    shutil.copytree(adapter, src)
    edit_json(src / "adapter_config.json", rank_pattern={pattern: 4})
    outcome = run_bounded(convert, src, tmp_path / "a.gguf", model_class="lora", base=tiny, seconds=60)
    assert_refused(outcome, "rank_pattern")


# --- item 13: echoed values -----------------------------------------------------------------------


def test_item13_long_architecture_string_truncated_in_error(tiny: Path, tmp_path: Path) -> None:
    """A 100 MB architecture name was echoed whole in the error."""
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    edit_json(model / "config.json", architectures=["A" * (100 << 20)])
    outcome = assert_refused(convert_bounded(model, budget_mb=1024), "unsupported architecture")
    assert len(outcome.message) < 1000, len(outcome.message)


def test_item13_long_tensor_name_truncated_in_error(tiny: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    path = model / "model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["x" * (1 << 20)] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + n :])
    outcome = assert_refused(convert_bounded(model))
    assert len(outcome.message) < 1000, len(outcome.message)


# --- property-based ------------------------------------------------------------------------------

_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, -1, 3, 64, 10**9, 2**31, 2**32, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_LEAVES = st.one_of(st.none(), st.booleans(), _NUMBERS, st.text(max_size=12), st.sampled_from(["", "A" * 100_000]))
JSON_VALUES = st.recursive(_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=8)
CONFIG_KEYS = [
    "architectures", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta",
    "rope_scaling", "rope_parameters", "tie_word_embeddings", "text_config", "sliding_window", "torch_dtype",
    "bos_token_id", "eos_token_id", "n_layer", "attention_bias", "mlp_bias",
]


@HYPOTHESIS
@given(edits=st.dictionaries(st.sampled_from(CONFIG_KEYS), JSON_VALUES, min_size=1, max_size=3))
def test_random_config_values_only_our_errors(tiny: Path, edits: dict[str, Any]) -> None:
    with copy_of(tiny) as model:
        config = json.loads((model / "config.json").read_text())
        config.update(edits)
        (model / "config.json").write_text(json.dumps(config))
        assert_clean(convert_bounded(model))


def _set(data: Any, path: list[Any], value: Any) -> Any:
    """``data`` with ``data[path[0]][path[1]]... = value``: an index past a list's end appends, and a parent of
    the wrong kind (a list where a key is set) is replaced."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(key, int):
        items = data if isinstance(data, list) else []
        if key < len(items):
            items[key] = _set(items[key], rest, value)
        else:
            items.append(_set(None, rest, value))
        return items
    obj = data if isinstance(data, dict) else {}
    obj[key] = _set(obj.get(key), rest, value)
    return obj


_TOKENIZER_PATHS = [
    ("tokenizer.json", ["model", "type"]), ("tokenizer.json", ["model", "vocab", "hello"]),
    ("tokenizer.json", ["model", "vocab"]), ("tokenizer.json", ["model", "merges", 0]),
    ("tokenizer.json", ["model", "merges"]), ("tokenizer.json", ["added_tokens", 0, "id"]),
    ("tokenizer.json", ["added_tokens", 0, "content"]), ("tokenizer.json", ["added_tokens", 99]),
    ("tokenizer.json", ["added_tokens"]), ("tokenizer.json", ["pre_tokenizer"]),
    ("tokenizer.json", ["pre_tokenizer", "pretokenizers", 0]), ("tokenizer.json", ["normalizer"]),
    ("tokenizer.json", ["model"]),
    ("tokenizer_config.json", ["added_tokens_decoder", "7"]), ("tokenizer_config.json", ["added_tokens_decoder"]),
    ("tokenizer_config.json", ["chat_template"]), ("tokenizer_config.json", ["bos_token"]),
    ("tokenizer_config.json", ["add_bos_token"]), ("special_tokens_map.json", ["eos_token"]),
    ("tokenizer_config.json", ["added_tokens_decoder", "300000000"]),
]


@HYPOTHESIS
@given(which=st.sampled_from(["tiny", "spm"]),
       edits=st.lists(st.tuples(st.sampled_from(_TOKENIZER_PATHS), JSON_VALUES), min_size=1, max_size=3))
def test_random_tokenizer_values_only_our_errors(tiny: Path, spm: Path, which: str,
                                                 edits: list[tuple[tuple[str, list[Any]], Any]]) -> None:
    """Random JSON at the places the tokenizer readers (ours and gguf-py's SpecialVocab) index."""
    with copy_of(tiny if which == "tiny" else spm) as model:
        for (name, path), value in edits:
            file = model / name
            data = json.loads(file.read_text()) if file.is_file() else {}
            file.write_text(json.dumps(_set(data, list(path), value)))
        assert_clean(convert_bounded(model))


def _mutate(data: bytes, mutations: list[tuple[int, int, int]], span: int) -> bytearray:
    out = bytearray(data)
    for at, width, value in mutations:
        at %= max(span, 1)
        out[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
    return out


_MUTATIONS = st.lists(st.tuples(st.integers(0, 1 << 20), st.sampled_from([1, 2, 4, 8]), st.integers(0, 2**64 - 1)),
                      min_size=1, max_size=4)


@HYPOTHESIS
@given(mutations=_MUTATIONS, cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
       sparse_tail=st.sampled_from([0, 0, 1 << 32]))
def test_mutated_safetensors_only_our_errors(tiny: Path, mutations: list[tuple[int, int, int]], cut: int | None,
                                             sparse_tail: int) -> None:
    """Bit flips in the header length and JSON, truncations, and a 4 GB sparse tail that makes any offset fit."""
    with copy_of(tiny) as model:
        path = model / "model.safetensors"
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        data = _mutate(raw, mutations, 8 + n)
        if cut is not None:
            del data[cut % len(data):]
        with path.open("wb") as f:
            f.write(data)
            f.truncate(len(data) + sparse_tail)
        assert_clean(convert_bounded(model))


_SHARD_NAMES = st.one_of(
    st.sampled_from(["model.safetensors", "/etc/passwd", "../model.safetensors", "./model.safetensors",
                     "model.safetensors\0", "con", "..\\model.safetensors", "a" * 300]),
    st.text(max_size=12), JSON_VALUES,
)


@HYPOTHESIS
@given(weight_map=st.one_of(st.just("ALL"), JSON_VALUES), shard=_SHARD_NAMES, extra=st.booleans())
def test_random_index_files_only_our_errors(tiny: Path, weight_map: object, shard: object, extra: bool) -> None:
    """A weight map of any shape, naming any shard: refused unless every name is the checkpoint's own file."""
    with copy_of(tiny) as model:
        names = tensor_names(model / "model.safetensors")
        mapping = dict.fromkeys(names, shard) if weight_map == "ALL" else weight_map
        if extra and isinstance(mapping, dict):
            mapping["not.a.tensor"] = "model.safetensors"
        write_index(model, mapping)
        outcome = assert_clean(convert_bounded(model))
        if outcome.kind == "ok":
            assert mapping == dict.fromkeys(names, "model.safetensors"), mapping


@HYPOTHESIS
@given(mutations=_MUTATIONS, cut=st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_mutated_sentencepiece_model_only_our_errors(spm: Path, mutations: list[tuple[int, int, int]],
                                                     cut: int | None) -> None:
    """Bit flips and truncations of tokenizer.model (the protobuf our own reader parses)."""
    with copy_of(spm) as model:
        path = model / "tokenizer.model"
        raw = path.read_bytes()
        data = _mutate(raw, mutations, len(raw))
        if cut is not None:
            del data[cut % len(data):]
        path.write_bytes(data)
        assert_clean(convert_bounded(model))


_ADAPTER_KEYS = ["r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "fan_in_fan_out", "peft_type",
                 "auto_mapping", "alora_invocation_tokens", "bias", "use_dora", "target_modules",
                 "base_model_name_or_path", "layer_replication"]


@HYPOTHESIS
@given(edits=st.dictionaries(st.sampled_from(_ADAPTER_KEYS), JSON_VALUES, min_size=1, max_size=3))
def test_random_adapter_config_values_only_our_errors(tiny: Path, adapter: Path, edits: dict[str, Any]) -> None:
    with copy_of(adapter) as src:
        edit_json(src / "adapter_config.json", **edits)
        assert_clean(run_bounded(convert, src, src.parent / "a.gguf", model_class="lora", base=tiny, seconds=120))
