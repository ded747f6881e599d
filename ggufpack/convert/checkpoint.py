"""A Hugging Face checkpoint directory: its configs and an index of its tensors, nothing loaded.

Reads ``config.json``, the optional ``generation_config.json``, and either ``model.safetensors``
(any ``*.safetensors`` file, in fact) or a sharded set described by ``*.safetensors.index.json``.
Pickle checkpoints (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) are refused: unpickling them can run
arbitrary code, and safetensors exists so that nobody has to.

The directory is untrusted (see :mod:`ggufpack.convert.files`): an index names shards by plain file
names only, no link leads outside the directory, and config.json's layer count may not exceed the
layers its tensors hold, since converters allocate per layer before they look at a tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ggufpack.convert.files import check_directory, plain_name, read_json
from ggufpack.convert.safetensors import TensorRef, read_header
from ggufpack.errors import GGUFPackError, shown

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class Checkpoint:
    """What a converter needs from a model directory; tensors are references, loaded on demand."""

    directory: Path
    config: dict[str, Any]
    generation_config: dict[str, Any]
    tensors: dict[str, TensorRef] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures")
        if not (isinstance(archs, list) and archs and isinstance(archs[0], str)):
            raise GGUFPackError(f"{self.directory / 'config.json'}: no 'architectures' list: cannot tell the model")
        return archs[0]


#: config.json keys (also under ``text_config``) that give the number of transformer blocks
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer")
_BLOCK_LISTS = ("layers", "h", "layer")


def layer_index(hf_name: str) -> int | None:
    """N in ``...layers.N....`` (``h.N``, ``layer.N``), or None for a tensor outside the blocks."""
    parts = hf_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in _BLOCK_LISTS and parts[i + 1].isdecimal():
            return int(parts[i + 1])
    return None


def check_layer_count(ckpt: Checkpoint) -> None:
    """Refuse a layer count above the number of distinct blocks the tensors hold: converters build a table
    per layer, so ``num_hidden_layers: 10**9`` would allocate gigabytes before any tensor is missed."""
    present = len({i for i in map(layer_index, ckpt.tensors) if i is not None})
    config, where = ckpt.config, ckpt.directory / "config.json"
    text = config.get("text_config")
    for cfg, prefix in ((config, ""), (text if isinstance(text, dict) else {}, "text_config.")):
        for key in LAYER_COUNT_KEYS:
            value = cfg.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > present:
                raise GGUFPackError(f"{where}: the checkpoint lacks layers: {prefix}{key} is {shown(value)}, but its "
                                    f"tensors hold {present} layer(s), so config.json does not describe these weights")


def open_checkpoint(directory: Path, link_roots: Sequence[Path] = ()) -> Checkpoint:
    """Index a checkpoint directory; raises GGUFPackError on anything missing or malformed.

    ``link_roots``: directories beyond the checkpoint that its symbolic links may point into.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise GGUFPackError(f"{directory}: not a directory (CONVERT expects a Hugging Face model directory)")
    check_directory(directory, link_roots)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise GGUFPackError(f"{directory}: no config.json: this is not a Hugging Face model directory")
    config = read_json(config_path)
    gen_path = directory / "generation_config.json"
    generation_config = read_json(gen_path) if gen_path.is_file() else {}

    tensors: dict[str, TensorRef] = {}
    for path in _weight_files(directory):
        found = read_header(path)
        for name, ref in found.items():
            if name in tensors:
                raise GGUFPackError(f"tensor {shown(name)} is stored twice: in {tensors[name].path.name} "
                                    f"and {path.name}")
            tensors[name] = ref
    _check_index(directory, tensors)
    return Checkpoint(directory=directory, config=config, generation_config=generation_config,
                      tensors=tensors)


def _weight_files(directory: Path) -> list[Path]:
    index = _index_file(directory)
    if index is not None:
        names = sorted({plain_name(shard, f"{index} (tensor {shown(name)})")
                        for name, shard in _weight_map(index).items()})
        files = [directory / n for n in names]
        missing = [n for n, p in zip(names, files, strict=True) if not p.is_file()]
        if missing:
            raise GGUFPackError(f"{index} names {len(missing)} shard(s) that are missing, first {shown(missing[0])}")
        return files
    files = sorted(p for p in directory.glob("*.safetensors") if p.is_file())
    if files:
        return files
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise GGUFPackError(
            f"{directory}: only pickle weights ({', '.join(pickles)}); they can execute code when loaded, "
            "so ggufpack does not read them. Re-save the model with "
            "save_pretrained(..., safe_serialization=True) to get safetensors."
        )
    raise GGUFPackError(f"{directory}: no *.safetensors weights found")


def _weight_map(index: Path) -> dict[str, Any]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise GGUFPackError(f"{index}: no 'weight_map'")
    return weight_map


def _index_file(directory: Path) -> Path | None:
    candidates = sorted(directory.glob("*.safetensors.index.json"))
    if len(candidates) > 1:
        raise GGUFPackError(f"{directory}: several safetensors index files: {', '.join(p.name for p in candidates)}")
    return candidates[0] if candidates else None


def _check_index(directory: Path, tensors: dict[str, TensorRef]) -> None:
    """Every tensor the index promises is in the shard it names."""
    index = _index_file(directory)
    if index is None:
        return
    for name, shard in _weight_map(index).items():
        ref = tensors.get(name)
        if ref is None or ref.path.name != shard:
            raise GGUFPackError(f"{index.name} says tensor {shown(name)} is in {shown(shard)}, but it is not there")
