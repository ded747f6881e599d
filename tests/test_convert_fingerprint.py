"""CONVERT's cache key holds a fingerprint of the converter's code: a converter fix invalidates the
layers an older converter made, with no version bump.

The fingerprint function is pointed at a copy of ``ggufpack/convert/`` and that copy is edited; the
build is real (a tiny checkpoint converted by the engine, its layer recorded in the op cache).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ggufpack.engine.ops import model
from ggufpack.util.fingerprint import source_fingerprint
from tests.helpers.builds import do_build, open_store, write_context
from tests.helpers.tiny_quant import tiny_checkpoint

PACKERFILE = """\
FROM scratch
CONVERT --from=context --type=F16 tiny /m/tiny.F16.gguf
CMD ["-m", "/m/tiny.F16.gguf"]
"""


@pytest.fixture
def converter_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the converter's sources that :func:`model.converter_fingerprint` reads instead."""
    copy = tmp_path / "convert-copy"
    shutil.copytree(model.CONVERTER_PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(model, "CONVERTER_PACKAGE", copy)
    model.converter_fingerprint.cache_clear()
    yield copy
    model.converter_fingerprint.cache_clear()


def _touch_one_file(package: Path) -> None:
    path = package / "writer.py"
    path.write_bytes(path.read_bytes() + b"\n# a converter fix\n")


def test_fingerprint_changes_when_one_source_file_changes(tmp_path: Path) -> None:
    copy = tmp_path / "convert"
    shutil.copytree(model.CONVERTER_PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    original = source_fingerprint(model.CONVERTER_PACKAGE, model.CONVERTER_DISTRIBUTIONS)
    assert source_fingerprint(copy, model.CONVERTER_DISTRIBUTIONS) == original  # paths and bytes, not where
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "stale.pyc").write_bytes(b"not source")
    assert source_fingerprint(copy, model.CONVERTER_DISTRIBUTIONS) == original
    _touch_one_file(copy)
    edited = source_fingerprint(copy, model.CONVERTER_DISTRIBUTIONS)
    assert edited != original
    (copy / "architectures" / "new_arch.py").write_text("ARCH = 1\n", encoding="utf-8")
    assert source_fingerprint(copy, model.CONVERTER_DISTRIBUTIONS) not in (original, edited)
    # the versions of what the output depends on count as well
    assert source_fingerprint(copy, ()) != source_fingerprint(copy, model.CONVERTER_DISTRIBUTIONS)


def test_convert_cache_key_follows_the_converter_code(tmp_path: Path, converter_copy: Path) -> None:
    context = write_context(tmp_path / "ctx", PACKERFILE)
    shutil.copytree(tiny_checkpoint(), context / "tiny")
    store = open_store(tmp_path / "store")
    first = do_build(store, context)
    assert first.stats.ops_run == 1

    model.converter_fingerprint.cache_clear()  # a new process with the same converter
    again = do_build(store, context)
    assert (again.stats.ops_run, again.stats.ops_cached) == (0, 1)
    assert again.descriptor.digest == first.descriptor.digest

    _touch_one_file(converter_copy)
    model.converter_fingerprint.cache_clear()  # a new process after a converter fix
    fixed = do_build(store, context)
    assert (fixed.stats.ops_run, fixed.stats.ops_cached) == (1, 0)
    assert [op.split(":")[1] for op in fixed.stats.run_ops] == ["CONVERT"]
