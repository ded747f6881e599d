"""One CONVERT, QUANTIZE or IMATRIX inside a BuildKit ExecOp (``python3 -m ggufpack.frontend.run_op SPEC``).

``SPEC`` (JSON) holds the Packerfile text, its name, build args and target, and which op of which stage
to run: the instruction is planned again here, by the same code, so its options are exactly the local
build's. Inputs are read-only mounts (``/ctx`` the build context, ``/src`` the ``--from`` stage, ``/cur``
the stage's own files); the result is written into ``/out`` (one file, or the shards of a split one),
which the frontend copies into the stage. The calls are the ones the local engine's ops make
(:mod:`ggufpack.engine.ops.model`), so the bytes are the same.
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath

#: the mount points (under ``GGUFPACK_RUN_OP_ROOT`` when set: tests run an op outside a container)
_ROOT = Path(os.environ.get("GGUFPACK_RUN_OP_ROOT", "/"))
CTX, SRC, CUR, OUT = _ROOT / "ctx", _ROOT / "src", _ROOT / "cur", _ROOT / "out"


def _under(root: Path, path: str) -> Path:
    from ..image.snapshot import clean_path

    return root / clean_path(path) if clean_path(path) else root


def _aux(path: str, roots: list[Path], what: str) -> Path:
    """A side file looked up as the local engine does: the source, the stage itself, then the context."""
    from ..errors import GGUFPackError

    for root in roots:
        candidate = _under(root, path)
        if candidate.is_file():
            return candidate
    raise GGUFPackError(f"{what} {path} is neither in the source, in this stage nor in the context")


def run(spec: dict) -> list[Path]:
    from ..errors import GGUFPackError, located
    from ..image.snapshot import clean_path
    from ..packerfile import instructions as ins
    from ..progress import Progress
    from .serve import plan_text

    plan = plan_text(spec["packerfile"], spec["filename"], spec["build_args"], spec["target"])
    op = plan.stages[spec["stage"]].ops[spec["op"]]
    c = op.command
    # the context, the --from stage, or (no --from, an op that reads its own stage) the stage itself
    source_root = CTX if spec["source"] == "context" else SRC if op.source is not None else CUR
    progress = Progress("plain")
    with located(c.position):
        if isinstance(c, ins.ConvertCommand):
            from ..convert import api

            src = _under(source_root, c.source)
            out = OUT / posixpath.basename(clean_path(c.dest))
            options = c.options
            base = _under(source_root, str(options.base)) if options.base is not None else None
            shown_as = {src: c.source, out: c.dest}
            if base is not None:
                shown_as[base] = str(options.base)
            result = api.convert(src, out, out_type=options.out_type, model_class=options.model_class, base=base,
                                 model_name=PurePosixPath(clean_path(c.source)).name or None,
                                 split_max_size=options.split_max_size, progress=progress, shown_as=shown_as)
            return list(result.paths)
        if isinstance(c, ins.QuantizeCommand):
            from ..quantize.api import quantize_model

            src = _under(source_root, c.source)
            if not src.is_file():
                raise GGUFPackError(f"the QUANTIZE source {c.source} is not a file of the source filesystem")
            options = c.options
            if options.imatrix is not None:
                imatrix = _aux(str(options.imatrix), [source_root, CUR, CTX], "the importance matrix")
                options = replace(options, imatrix=imatrix, imatrix_name=clean_path(str(c.options.imatrix)))
            out = OUT / posixpath.basename(clean_path(c.dest))
            progress.log(f"  quantizing {posixpath.basename(clean_path(c.source))} to {options.type}")
            return list(quantize_model(src, out, options, backend=None, progress=progress))
        if isinstance(c, ins.ImatrixCommand):
            from ..quantize.api import make_imatrix
            from ..quantize.imatrix import DEFAULT_CTX_SIZE, ImatrixOptions

            model = _under(source_root, c.model)
            calibration = _aux(c.calibration, [source_root, CUR, CTX], "the calibration text")
            options = ImatrixOptions(chunks=c.chunks, ctx_size=c.ctx_size or DEFAULT_CTX_SIZE,
                                     dataset_name=clean_path(c.calibration) or c.calibration)
            out = OUT / posixpath.basename(clean_path(c.dest))
            make_imatrix(model, calibration, out, options, backend=None, progress=progress)
            return [out]
        raise GGUFPackError(f"run_op runs CONVERT, QUANTIZE and IMATRIX, not {c.keyword}")


def main(argv: list[str] | None = None) -> int:
    from ..errors import GGUFPackError

    args = sys.argv[1:] if argv is None else argv
    try:
        written = run(json.loads(args[0]))
    except GGUFPackError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    for path in written:
        print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
