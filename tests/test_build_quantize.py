"""CONVERT, IMATRIX and QUANTIZE --imatrix in one build; the cache reruns only what a change reaches.

The model is converted in one stage; the final stage computes the importance matrix of that F16 file
over a calibration text kept in the build context and quantizes to IQ2_XXS (a type llama.cpp refuses
without an importance matrix) with it. The recorded provenance names paths inside the image.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.builds import do_build, image_tree, open_store, write_context
from tests.helpers.tiny_quant import CALIBRATION, built_tool_backend, read_gguf_header, tiny_checkpoint

PACKERFILE = """\
FROM scratch AS f16
CONVERT --from=context --type=F16 tiny /m/tiny.F16.gguf

FROM scratch
IMATRIX --from=f16 --chunks=4 --ctx-size=64 /m/tiny.F16.gguf data/calibration.txt /m/tiny.imatrix
QUANTIZE --from=f16 --type=IQ2_XXS --imatrix=/m/tiny.imatrix /m/tiny.F16.gguf /m/tiny.IQ2_XXS.gguf
CMD ["-m", "/m/tiny.IQ2_XXS.gguf"]
"""


def _context(tmp_path: Path, calibration: str) -> Path:
    context = write_context(tmp_path / "ctx", PACKERFILE, {"data/calibration.txt": calibration.encode()})
    if not (context / "tiny").exists():
        shutil.copytree(tiny_checkpoint(), context / "tiny")
    return context


def test_imatrix_then_quantize_builds_and_caches(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    context = _context(tmp_path, CALIBRATION)
    first = do_build(store, context)
    assert first.stats.ops_run == 3
    tree = image_tree(store, first.image.manifest)
    model = tmp_path / "model.gguf"
    model.write_bytes(tree["m/tiny.IQ2_XXS.gguf"][2])  # type: ignore[arg-type]
    metadata, _ = read_gguf_header(model)
    assert metadata["general.file_type"] == 19  # IQ2_XXS
    assert metadata["quantize.imatrix.file"] == "m/tiny.imatrix"
    assert metadata["quantize.imatrix.dataset"] == "data/calibration.txt"
    assert metadata["quantize.imatrix.chunks_count"] == 4
    assert "m/tiny.imatrix" in tree and "m/tiny.F16.gguf" not in tree

    again = do_build(store, context)
    assert (again.stats.ops_run, again.stats.ops_cached) == (0, 3)
    assert again.image.manifest == first.image.manifest

    _context(tmp_path, CALIBRATION.replace("lazy dogs", "sleepy cats"))
    changed = do_build(store, context)
    assert [op.split(":")[1] for op in changed.stats.run_ops] == ["IMATRIX", "QUANTIZE"]
    assert changed.stats.ops_cached == 1


SPLIT_PACKERFILE = """\
FROM scratch
CONVERT --from=context --type=F16 --split-max-size=200K tiny /m/tiny.F16.gguf
QUANTIZE --type=Q8_0 /m/tiny.F16-00001-of-{count:05d}.gguf /m/tiny.Q8_0.gguf
CMD ["-m", "/m/tiny.Q8_0.gguf"]
"""


def test_split_conversion_lands_as_shards_and_quantizes(tmp_path: Path) -> None:
    """CONVERT --split-max-size puts every shard in the image; QUANTIZE of shard 1 reads them all."""
    from ggufpack.convert import convert

    probe = convert(tiny_checkpoint(), tmp_path / "probe" / "tiny.F16.gguf", out_type="F16", split_max_size=200_000)
    count = len(probe.paths)
    assert count > 1
    context = write_context(tmp_path / "ctx", SPLIT_PACKERFILE.format(count=count))
    shutil.copytree(tiny_checkpoint(), context / "tiny")
    store = open_store(tmp_path / "store")
    result = do_build(store, context)
    tree = image_tree(store, result.image.manifest)
    shards = sorted(name for name in tree if name.startswith("m/tiny.F16-"))
    assert shards == [f"m/tiny.F16-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    for i, name in enumerate(shards):
        shard = tmp_path / f"shard{i}.gguf"
        shard.write_bytes(tree[name][2])  # type: ignore[arg-type]
        assert read_gguf_header(shard)[0]["split.no"] == i
    model = tmp_path / "q.gguf"
    model.write_bytes(tree["m/tiny.Q8_0.gguf"][2])  # type: ignore[arg-type]
    metadata, _ = read_gguf_header(model)
    assert metadata["general.file_type"] == 7  # Q8_0, from all shards' tensors


Q8_PACKERFILE = """\
FROM scratch
CONVERT --from=context --type=F16 tiny /m/tiny.F16.gguf
QUANTIZE --type=Q8_0 /m/tiny.F16.gguf /m/tiny.Q8_0.gguf
CMD ["-m", "/m/tiny.Q8_0.gguf"]
"""


def test_build_backend_choice_reruns_quantize_and_gives_the_same_image(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """--backend is part of QUANTIZE's cache key; in-process, numpy and the built llama-quantize make
    byte-identical Q8_0 files, so the image digest does not depend on the backend."""
    context = write_context(tmp_path / "ctx", Q8_PACKERFILE)
    shutil.copytree(tiny_checkpoint(), context / "tiny")
    store = open_store(tmp_path / "store")
    inprocess = do_build(store, context)
    numpy = do_build(store, context, backend="numpy")
    assert [op.split(":")[1] for op in numpy.stats.run_ops] == ["QUANTIZE"]
    assert numpy.descriptor.digest == inprocess.descriptor.digest
    tool = built_tool_backend("quantize", monkeypatch, required=False)
    if tool is not None:
        built = do_build(store, context, backend=tool.name)
        assert [op.split(":")[1] for op in built.stats.run_ops] == ["QUANTIZE"]
        assert built.descriptor.digest == inprocess.descriptor.digest
    again = do_build(store, context, backend="numpy")
    assert again.stats.ops_run == 0


def test_the_imatrix_sample_builds_with_the_quickstart_context(tmp_path: Path) -> None:
    """``Packerfile.samples/imatrix``, as its README builds it: IMATRIX over the CAT'd calibration text, then
    QUANTIZE --imatrix; the quantized model records the matrix, and only it reaches the image."""
    pytest.importorskip("llama_cpp")
    samples = Path(__file__).resolve().parent.parent / "Packerfile.samples"
    store = open_store(tmp_path / "home")
    result = do_build(store, samples / "quickstart", file=samples / "imatrix" / "GGUFPackerfile",
                      tags=("tiny-llama:iq4_xs",))
    tree = image_tree(store, result.image.manifest)
    assert sorted(p for p, (kind, _, _) in tree.items() if kind == "file") == ["models/tiny-llama.IQ4_XS.gguf"]
    model = tmp_path / "model.gguf"
    data = tree["models/tiny-llama.IQ4_XS.gguf"][2]
    assert isinstance(data, bytes)
    model.write_bytes(data)
    metadata, _ = read_gguf_header(model)
    assert metadata["quantize.imatrix.file"] == "models/tiny-llama.imatrix"  # the image path
    assert metadata["quantize.imatrix.chunks_count"] >= 1
    assert result.image.config["config"]["Cmd"] == ["-m", "/models/tiny-llama.IQ4_XS.gguf", "-c", "512"]
