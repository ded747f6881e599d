"""The build cache: a rebuild runs no op, an edit reruns only what depends on it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ggufpack.engine import BuildResult
from ggufpack.progress import Progress
from ggufpack.store import Store

from .helpers.builds import do_build, sample_context, sample_packerfile, tiny_gguf_bytes


def _op_ids() -> dict[str, str]:
    """Op name → BuildStats.run_ops id (stage:KEYWORD:line) in the sample as first written."""
    starts = {
        "cat_system": ("prompts", "CAT <<EOF /prompts/system.txt"),
        "cat_extra": ("prompts", "CAT <<EOF /prompts/extra"),
        "copy_model": ("1", "COPY tiny.gguf"), "copy_prompts": ("1", "COPY --from=prompts"),
        "copy_docs": ("1", "COPY docs/"), "cat_notes": ("1", "CAT <<EOF /notes.txt"),
    }
    lines = sample_packerfile().splitlines()
    out = {}
    for name, (stage, prefix) in starts.items():
        (line,) = [i + 1 for i, text in enumerate(lines) if text.startswith(prefix)]
        out[name] = f"{stage}:{prefix.split()[0]}:{line}"
    return out


_IDS = _op_ids()
CAT_SYSTEM, CAT_EXTRA = _IDS["cat_system"], _IDS["cat_extra"]
COPY_MODEL, COPY_PROMPTS, COPY_DOCS, CAT_NOTES = (_IDS[k] for k in ("copy_model", "copy_prompts", "copy_docs",
                                                                     "cat_notes"))
ALL_OPS = set(_IDS.values())


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_gguf_bytes(tmp_path_factory.mktemp("gguf"))


@pytest.fixture
def built(tmp_path: Path, gguf_bytes: bytes) -> tuple[Store, Path, BuildResult]:
    store = Store(tmp_path / "home")
    context = sample_context(tmp_path / "ctx", gguf_bytes)
    first = do_build(store, context)
    assert set(first.stats.run_ops) == ALL_OPS and first.stats.ops_cached == 0
    return store, context, first


def _edit(context: Path, **sample: str) -> None:
    (context / "GGUFPackerfile").write_text(sample_packerfile(**sample))


def test_rebuild_runs_no_op_and_prints_cached(
    built: tuple[Store, Path, BuildResult], capsys: pytest.CaptureFixture[str]
) -> None:
    store, context, first = built
    again = do_build(store, context, progress=Progress("plain"))
    assert again.stats.ops_run == 0 and again.stats.run_ops == []
    assert again.stats.ops_cached == len(ALL_OPS)
    assert again.descriptor == first.descriptor
    steps = [line for line in capsys.readouterr().err.splitlines() if line.startswith("#")]
    assert len(steps) == len(ALL_OPS)
    assert all(line.endswith(" CACHED") for line in steps), steps
    assert any(line.startswith("#") and "[prompts 1/2] CAT <<EOF /prompts/system.txt CACHED" in line
               for line in steps), steps


def test_editing_a_cat_reruns_it_what_follows_and_dependents(built: tuple[Store, Path, BuildResult]) -> None:
    store, context, first = built
    _edit(context, extra="changed extra\n")
    result = do_build(store, context)
    # CAT extra, then the final stage's COPY --from prompts and every layer op after it
    assert set(result.stats.run_ops) == {CAT_EXTRA, COPY_PROMPTS, COPY_DOCS, CAT_NOTES}
    assert result.descriptor != first.descriptor

    _edit(context, extra="changed extra\n", notes="other notes\n")
    result = do_build(store, context)
    assert result.stats.run_ops == [CAT_NOTES]

    # back to the first text: everything is still cached, and the image is the first one again
    _edit(context)
    result = do_build(store, context)
    assert result.stats.ops_run == 0 and result.descriptor == first.descriptor


def test_label_edit_reruns_no_layer_op(built: tuple[Store, Path, BuildResult]) -> None:
    store, context, first = built
    _edit(context, team="research")
    result = do_build(store, context)
    assert result.stats.ops_run == 0
    assert result.image.config["config"]["Labels"]["com.example.team"] == "research"
    assert result.image.manifest["layers"] == first.image.manifest["layers"]
    assert result.descriptor != first.descriptor


def test_no_cache_reruns_everything_to_the_same_image(built: tuple[Store, Path, BuildResult]) -> None:
    store, context, first = built
    result = do_build(store, context, no_cache=True)
    assert set(result.stats.run_ops) == ALL_OPS and result.stats.ops_cached == 0
    assert result.descriptor == first.descriptor


def test_context_content_change_reruns_its_copy_but_mtime_alone_does_not(
    built: tuple[Store, Path, BuildResult], tmp_path: Path
) -> None:
    store, context, _ = built
    model = context / "tiny.gguf"
    later = time.time() + 100
    os.utime(model, (later, later))
    os.utime(context / "docs" / "README.md", (later, later))
    assert do_build(store, context).stats.ops_run == 0

    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # a tensor byte: the header (and so CMD's model) stays valid
    model.write_bytes(bytes(data))
    result = do_build(store, context)
    # the model's COPY and the layer ops after it in its stage; the prompts stage is untouched
    assert set(result.stats.run_ops) == {COPY_MODEL, COPY_PROMPTS, COPY_DOCS, CAT_NOTES}

    (context / "docs" / "usage" / "run.txt").write_bytes(b"changed\n")
    result = do_build(store, context)
    assert set(result.stats.run_ops) == {COPY_DOCS, CAT_NOTES}
    # a new file in a copied directory is a change of that COPY too
    (context / "docs" / "new.txt").write_bytes(b"new\n")
    assert set(do_build(store, context).stats.run_ops) == {COPY_DOCS, CAT_NOTES}


def test_cache_survives_a_new_store_object_and_a_pruned_blob_is_rebuilt(
    built: tuple[Store, Path, BuildResult],
) -> None:
    store, context, first = built
    # a record whose layer blob is gone is not used: the op runs again and the image is the same
    layers = first.image.manifest["layers"]
    store.blob_path(layers[-1]["digest"]).unlink()
    result = do_build(Store(store.root), context)
    assert result.stats.run_ops == [CAT_NOTES]
    assert result.descriptor == first.descriptor
    assert store.has_blob(layers[-1]["digest"])
