"""Reading a checkpoint's own files from hostile input: names, links, sizes and JSON, all checked first.

A model directory is untrusted (a cloned repository, a download): its index files name shards, its
configs give the sizes the converter allocates by, its links may point anywhere. Everything the
converter (and gguf-py, which reads the tokenizer files and the model card itself) takes from it
goes through these checks:

- a file the checkpoint names (an index's shard) is one plain path component, never a path;
- no symbolic link in the directory leads outside it (or outside the roots the caller vouches for,
  such as the build's store, whose files the build links into a scratch directory), and no entry is
  a FIFO or a device, so nothing outside the checkpoint is ever read or waited on;
- a file read whole (JSON, ``tokenizer.model``, ``merges.txt``, templates, the model card) is a
  regular file of at most :data:`MAX_SMALL_FILE_BYTES`;
- a file that is not shaped as its format defines ends in a :class:`GGUFPackError` naming it
  (:func:`malformed`), never in a traceback, and no message echoes more than a line of its content.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ggufpack.errors import GGUFPackError, clipped, shown

MAX_SMALL_FILE_BYTES = 128 << 20
"""Largest file read whole: a JSON config, a tokenizer, a template, the model card. The largest real
ones (Gemma 3's ``tokenizer.json``) are about 33 MB."""
MAX_ENTRIES = 100_000
"""Most directory entries a checkpoint may hold (real ones hold tens)."""
#: files read whole by ggufpack or by gguf-py (SpecialVocab, Metadata) at the top of a model directory
READ_WHOLE = frozenset({
    "README.md", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
    "chat_template.jinja", "chat_template.json", "tokenizer.model", "adapter_config.json", "modules.json",
})
_TEMPLATES_DIR = "additional_chat_templates"
#: what indexing a file's content as its format defines raises when the file is not shaped so
SHAPE_ERRORS: tuple[type[Exception], ...] = (
    KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError, ZeroDivisionError, struct.error,
)


@contextmanager
def malformed(what: str) -> Iterator[None]:
    """Turn the errors of reading a wrongly shaped file into a GGUFPackError: ``what`` names the file."""
    try:
        yield
    except SHAPE_ERRORS as e:
        raise GGUFPackError(f"{what} ({type(e).__name__}: {clipped(str(e))})") from e


def plain_name(name: object, where: str) -> str:
    """``name`` if it is one plain file name (an index's shard), else a GGUFPackError: no ``/`` or ``\\``,
    no ``.``/``..``, no NUL, not empty, at most 255 bytes."""
    if not (isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")
            and len(name.encode("utf-8", "surrogatepass")) <= 255):
        raise GGUFPackError(f"{where} names the file {shown(name)}, which is not a plain file name in the "
                            "checkpoint directory: refused (shards must lie beside the index)")
    return name


def relative_path(name: object, where: str) -> Path:
    """``name`` as a path inside the model directory (a sentence-transformers module's ``path``): relative,
    without ``..``, ``\\`` or NUL; else a GGUFPackError."""
    parts = name.split("/") if isinstance(name, str) and not name.startswith("/") else []
    if not parts or any(p == ".." or "\\" in p or "\0" in p for p in parts):
        raise GGUFPackError(f"{where} names the path {shown(name)}, which is not a relative path inside the "
                            "model directory: refused")
    return Path(*[p for p in parts if p not in ("", ".")])


def link_roots_of(directory: Path, extra: Sequence[Path] = ()) -> list[Path]:
    """Where links in ``directory`` may lead: the directory itself, ``extra``, and, for a Hugging Face
    hub cache snapshot (``models--x/snapshots/<rev>``), that repository's ``blobs``."""
    root = directory.resolve()
    roots = [root, *(Path(r).resolve() for r in extra)]
    if root.parent.name == "snapshots":
        roots.append(root.parent.parent / "blobs")
    return roots


def check_directory(directory: Path, link_roots: Sequence[Path] = ()) -> None:
    """Refuse a model directory holding links that leave it, special files, or oversized small files.

    ``link_roots`` are further directories links may point into (the build links into its store).
    """
    roots = link_roots_of(directory, link_roots)
    top = roots[0]
    seen = 0
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in [*dirnames, *filenames]:
            seen += 1
            if seen > MAX_ENTRIES:
                raise GGUFPackError(f"{directory}: more than {MAX_ENTRIES} files: not a model directory")
            path = Path(dirpath, name)
            rel = path.relative_to(top)
            _check_entry(directory, path, rel, roots)


def _check_entry(directory: Path, path: Path, rel: Path, roots: list[Path]) -> None:
    where = f"{directory}: {rel}"
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            target = path.resolve()
            if not any(target.is_relative_to(root) for root in roots):
                raise GGUFPackError(f"{where} is a symbolic link to {shown(os.readlink(path))}, outside the "
                                    "checkpoint: refused (ggufpack reads only the checkpoint's own files)")
            if not target.exists():  # dangling: nothing can be read through it
                return
            mode = target.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise GGUFPackError(f"{where} is neither a file nor a directory: refused")
        whole = (len(rel.parts) == 1 and rel.name in READ_WHOLE) or (
            len(rel.parts) == 2 and rel.parts[0] == _TEMPLATES_DIR and rel.suffix == ".jinja")
        if whole and stat.S_ISREG(mode):
            _check_size(path, path.stat().st_size)
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
        raise GGUFPackError(f"{where}: cannot check it: {e}") from e


def _check_size(path: Path, size: int, limit: int = MAX_SMALL_FILE_BYTES) -> None:
    if size > limit:
        raise GGUFPackError(f"{path} holds {size} bytes, more than the {limit >> 20} MiB ggufpack reads for such a "
                            "file: refused")


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (never waiting on a FIFO), else a GGUFPackError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except OSError as e:
        raise GGUFPackError(f"cannot read {path}: {e.strerror or e}") from e
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise GGUFPackError(f"{path} is not a regular file: refused")
    return f


def read_bounded(path: Path, limit: int = MAX_SMALL_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path``; a GGUFPackError for anything else or anything over ``limit``."""
    with open_regular(path) as f:
        try:
            _check_size(path, os.fstat(f.fileno()).st_size, limit)
            data = f.read(limit + 1)
        except OSError as e:
            raise GGUFPackError(f"cannot read {path}: {e.strerror or e}") from e
    _check_size(path, len(data), limit)
    return data


def parse_json(data: bytes, where: str) -> Any:
    """The JSON value in ``data``; errors name ``where`` and never quote the content."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GGUFPackError(f"{where} is not UTF-8 text (byte {e.start} is not): not JSON") from e
    try:
        return json.loads(text)
    except RecursionError as e:  # absurdly deep nesting
        raise GGUFPackError(f"{where} is not valid JSON: nested too deeply") from e
    except ValueError as e:  # JSONDecodeError, or an integer past Python's 4300-digit limit
        raise GGUFPackError(f"{where} is not valid JSON: {clipped(str(e))}") from e


def read_json_value(path: Path) -> Any:
    """Any JSON value from the file ``path`` (at most :data:`MAX_SMALL_FILE_BYTES`)."""
    return parse_json(read_bounded(path), str(path))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a GGUFPackError that names the file."""
    data = read_json_value(path)
    if not isinstance(data, dict):
        raise GGUFPackError(f"{path}: expected a JSON object")
    return data
