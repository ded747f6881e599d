"""Quantize a GGUF file or compute an importance matrix with a chosen backend.

``backend=None`` is llama-cpp-python in this process (the default everywhere); any other name is
resolved by :func:`ggufpack.backends.resolve_backend` (``llama.cpp`` = the best installed variant)
and its tools run out of process; the ``numpy`` fallback quantizes its few types without llama.cpp.
Outputs appear complete or not at all: they are written under a temporary name beside ``dest`` and
renamed into place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import GGUFPackError, UsageError
from ..options.quantize import QuantizeOptions
from ..progress import QUIET, Progress
from .imatrix import ImatrixOptions, compute_imatrix


def backend_key(name: str | None, capability: str) -> dict[str, str]:
    """Which backend would run and its llama.cpp build id: the part of QUANTIZE/IMATRIX cache keys."""
    from ..backends import resolve_backend

    backend = resolve_backend(name, capability)
    return {"name": backend.name, "version": backend.version}


@contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A private directory beside ``dest`` to write into; removed with whatever was left in it."""
    if dest.is_dir():
        raise GGUFPackError(f"{dest} is a directory: give the output a file name")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent)
    except OSError as exc:
        raise GGUFPackError(f"cannot write {dest}: {exc.strerror or exc}") from None
    with staging as tmp:
        yield Path(tmp)


def quantize_model(source: Path, dest: Path, options: QuantizeOptions, *, backend: str | None = None,
                   progress: Progress = QUIET) -> list[Path]:
    """Quantize ``source`` into ``dest`` (``--keep-split``: shards named after it); returns the files written."""
    from ..backends import resolve_backend

    source, dest = Path(source), Path(dest)
    options = options.validated()
    if options.imatrix is not None and not Path(options.imatrix).is_file():  # a check validated() cannot make
        raise UsageError(f"--imatrix {options.imatrix}: no such file")
    if not source.is_file():
        raise GGUFPackError(f"{source}: no such GGUF file")
    chosen = resolve_backend(backend, "quantize")
    with _staging(dest) as tmp:
        staged = tmp / dest.name
        if chosen.kind == "in-process":
            from .inprocess import quantize

            written = quantize(source, staged, options)
        elif chosen.kind == "fallback":
            from .fallback import quantize as quantize_with_numpy

            quantize_with_numpy(source, staged, options, progress)
            written = [staged]
        else:
            from .tool import quantize_with_tool

            written = quantize_with_tool(chosen, source, staged, options, progress)
        final = [dest.parent / path.name for path in written]
        for path, target in zip(written, final, strict=True):
            os.replace(path, target)
    return final


def make_imatrix(model: Path, calibration: Path, out: Path, options: ImatrixOptions | None = None, *,
                 backend: str | None = None, progress: Progress = QUIET) -> None:
    """Compute the importance matrix of ``model`` on ``calibration`` into ``out`` (GGUF imatrix format)."""
    from ..backends import resolve_backend

    model, calibration, out = Path(model), Path(calibration), Path(out)
    options = options or ImatrixOptions()
    for path, what in ((model, "GGUF model"), (calibration, "calibration text")):
        if not path.is_file():
            raise GGUFPackError(f"{path}: no such {what}")
    chosen = resolve_backend(backend, "imatrix")
    with _staging(out) as tmp:
        staged = tmp / out.name
        if chosen.kind == "in-process":
            compute_imatrix(model, calibration, staged, options, progress)
        else:
            from .tool import imatrix_with_tool

            imatrix_with_tool(chosen, model, calibration, staged, options, progress)
        os.replace(staged, out)
