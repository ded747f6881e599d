"""Running a backend's llama.cpp tools: ``llama-quantize`` and ``llama-imatrix``.

Arguments are built as lists from the same option objects the in-process path uses (never a shell
string) and the tool runs with its output captured: a progress bar follows llama-quantize's
``[ i/ n]`` tensor lines, and the tail of the output goes into the error when the tool fails.

llama.cpp records two paths in what it writes: ``quantize.imatrix.file`` (the ``--imatrix`` argument)
and ``imatrix.datasets`` (the ``-f`` argument). When the caller wants another name recorded (the
build engine records paths inside the image, so that results do not depend on scratch directories),
the file is linked under that relative name in a private directory and the tool runs there.
"""

from __future__ import annotations

import collections
import re
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import GGUFPackError
from ..options.quantize import QuantizeOptions
from ..progress import QUIET, Progress
from .imatrix import ImatrixOptions
from .inprocess import output_files, quantize_failure

if TYPE_CHECKING:
    from ..backends import Backend

_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")
_TAIL_LINES = 40


def quantize_args(tool: Path, source: Path, dest: Path, options: QuantizeOptions, imatrix_arg: str | None) -> list[str]:
    """``llama-quantize [flags] SOURCE DEST TYPE [NTHREADS]``; ``imatrix_arg`` is how the imatrix is named."""
    options = options.validated()
    args = [str(tool)]
    switches = {"--allow-requantize": options.allow_requantize, "--leave-output-tensor": options.leave_output_tensor,
                "--pure": options.pure, "--keep-split": options.keep_split}
    args += [flag for flag, on in switches.items() if on]
    if imatrix_arg is not None:
        args += ["--imatrix", imatrix_arg]
    for name in options.include_weights:
        args += ["--include-weights", name]
    for name in options.exclude_weights:
        args += ["--exclude-weights", name]
    if options.output_tensor_type:
        args += ["--output-tensor-type", options.output_tensor_type.lower()]
    if options.token_embedding_type:
        args += ["--token-embedding-type", options.token_embedding_type.lower()]
    for pattern, type_name in options.tensor_types:
        args += ["--tensor-type", f"{pattern}={type_name.lower()}"]
    for spec in options.override_kv:
        args += ["--override-kv", spec]
    args += [str(source), str(dest), options.type]
    if options.threads:
        args.append(str(options.threads))
    return args


def imatrix_args(tool: Path, model: Path, calibration_arg: str, out: Path, options: ImatrixOptions) -> list[str]:
    """``llama-imatrix -m MODEL -f TEXT -o OUT -c CTX [--chunks N] [-t THREADS] --no-ppl``."""
    args = [str(tool), "-m", str(model), "-f", calibration_arg, "-o", str(out), "--output-format", "gguf",
            "-c", str(options.ctx_size), "--no-ppl"]
    if options.chunks is not None:
        args += ["--chunks", str(options.chunks)]
    if options.threads:
        args += ["-t", str(options.threads)]
    return args


def _named_as(path: Path, name: str | None, workdir: Path) -> str:
    """The argument that names ``path`` as ``name`` (default: the path as given) when the tool runs in ``workdir``.

    A relative name is linked in ``workdir``; one that climbs out with ``..`` cannot be, and neither can
    an absolute name of another file: the tool then gets (and records) the absolute path.
    """
    name = str(path) if name is None else name
    relative = PurePosixPath(name)
    if relative.parts and not relative.is_absolute() and ".." not in relative.parts:
        link = workdir / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())
        return name
    # the tool runs in ``workdir``: only an absolute name still reaches the file there
    return name if relative.is_absolute() and Path(name).resolve() == path.resolve() else str(path.resolve())


def run_tool(args: list[str], *, cwd: Path, what: str, progress: Progress = QUIET) -> tuple[int, str]:
    """Run a tool with its output captured; (exit status, the last lines of its output)."""
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    try:
        proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise GGUFPackError(f"cannot run {args[0]}: {exc.strerror or exc}") from None
    assert proc.stdout is not None
    with proc, progress.bar(what, total=None, unit="tensor") as bar:
        try:
            for line in proc.stdout:
                tail.append(line.rstrip("\n"))
                if _TENSOR_LINE.match(line):
                    bar.update(1)
        except BaseException:  # interrupted: the tool must not outlive us, writing into a removed directory
            proc.kill()
            proc.wait()
            raise
    return proc.returncode, "\n".join(tail)


def quantize_with_tool(backend: Backend, source: Path, dest: Path, options: QuantizeOptions,
                       progress: Progress = QUIET) -> list[Path]:
    """Quantize with the backend's ``llama-quantize``; returns the files written (shards with --keep-split)."""
    tool = backend.tool("llama-quantize")
    qtype = options.validated().type
    with tempfile.TemporaryDirectory(prefix="ggufpack-quantize-") as tmp:
        workdir = Path(tmp)
        imatrix_arg = (_named_as(Path(options.imatrix), options.imatrix_name, workdir)
                       if options.imatrix is not None else None)
        args = quantize_args(tool, source.resolve(), dest.resolve(), options, imatrix_arg)
        status, output = run_tool(args, cwd=workdir, what=f"quantize {qtype}", progress=progress)
    written = output_files(dest, options.keep_split)
    if status != 0 or not written:
        for path in written:
            path.unlink(missing_ok=True)
        raise quantize_failure(source.name, qtype, output)
    return written


def imatrix_with_tool(backend: Backend, model: Path, calibration: Path, out: Path, options: ImatrixOptions,
                      progress: Progress = QUIET) -> None:
    """Compute an importance matrix with the backend's ``llama-imatrix`` into ``out`` (GGUF format)."""
    tool = backend.tool("llama-imatrix")
    with tempfile.TemporaryDirectory(prefix="ggufpack-imatrix-") as tmp:
        workdir = Path(tmp)
        calibration_arg = _named_as(calibration, options.dataset_name, workdir)
        args = imatrix_args(tool, model.resolve(), calibration_arg, out.resolve(), options)
        status, output = run_tool(args, cwd=workdir, what="imatrix", progress=progress)
    if status != 0 or not out.exists():
        out.unlink(missing_ok=True)
        raise GGUFPackError(f"{tool.name} failed (exit status {status}) on {model.name}:\n{output}")
