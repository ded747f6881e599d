"""A Hugging Face checkpoint directory: its configs and an index of its tensors, nothing loaded.

Reads ``config.json``, the optional ``generation_config.json``, and either ``model.safetensors``
(any ``*.safetensors`` file, in fact) or a sharded set described by ``*.safetensors.index.json``.
Pickle checkpoints (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) are refused: unpickling them can run
arbitrary code, and safetensors exists so that nobody has to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ggufpack.convert.safetensors import TensorRef, read_header
from ggufpack.errors import GGUFPackError

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


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a GGUFPackError that names the file."""
    data = read_json_value(path)
    if not isinstance(data, dict):
        raise GGUFPackError(f"{path}: expected a JSON object")
    return data


def read_json_value(path: Path) -> Any:
    """Any JSON value from ``path``, or a GGUFPackError that names the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise GGUFPackError(f"cannot read {path}: {e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise GGUFPackError(f"{path} is not valid JSON: {e}") from e


def open_checkpoint(directory: Path) -> Checkpoint:
    """Index a checkpoint directory; raises GGUFPackError on anything missing or malformed."""
    directory = Path(directory)
    if not directory.is_dir():
        raise GGUFPackError(f"{directory}: not a directory (CONVERT expects a Hugging Face model directory)")
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
                raise GGUFPackError(f"tensor {name!r} is stored twice: in {tensors[name].path.name} and {path.name}")
            tensors[name] = ref
    _check_index(directory, tensors)
    return Checkpoint(directory=directory, config=config, generation_config=generation_config,
                      tensors=tensors)


def _weight_files(directory: Path) -> list[Path]:
    index = _index_file(directory)
    if index is not None:
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise GGUFPackError(f"{index}: no 'weight_map'")
        names = sorted(set(weight_map.values()))
        files = [directory / n for n in names]
        missing = [n for n, p in zip(names, files, strict=True) if not p.is_file()]
        if missing:
            raise GGUFPackError(f"{index} names shards that are missing: {', '.join(missing)}")
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
    for name, shard in read_json(index)["weight_map"].items():
        ref = tensors.get(name)
        if ref is None or ref.path.name != shard:
            raise GGUFPackError(f"{index.name} says tensor {name!r} is in {shard}, but it is not there")
