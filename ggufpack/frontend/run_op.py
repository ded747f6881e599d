"""One CONVERT, QUANTIZE or IMATRIX inside a BuildKit ExecOp (``python3 -m ggufpack.frontend.run_op SPEC``).

``SPEC`` (JSON) is only what the op needs: the instruction's keyword, its expanded arguments
(``command.arguments()``: source, dest and the option set's JSON arguments), where it reads (``source``:
``context`` or ``stage``) and whether it has a ``--from`` (``from_stage``). Nothing else of the Packerfile
is in it, so the ExecOp's cache key is the op alone: editing another line of the Packerfile (a LABEL, a
comment, a line moved) leaves it cached. The options are rebuilt from their JSON form
(:func:`options_from_json`, the inverse of ``json_arguments``) and validated again.

Inputs are read-only mounts (``/ctx`` the build context, ``/src`` the ``--from`` stage, ``/cur`` the
stage's own files); the result is written into ``/out`` (one file, or the shards of a split one), which
the frontend copies into the stage. The calls are the ones the local engine's ops make
(:mod:`ggufpack.engine.ops.model`), so the bytes are the same.
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

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


def options_from_json(owner: type, arguments: dict) -> Any:
    """An option set from a command's JSON arguments (what ``json_arguments`` wrote), validated again."""
    from ..options.declare import LIST, options_of

    values: dict[str, Any] = {}
    for opt in options_of(owner):
        if not opt.packerfile or opt.json_key not in arguments:
            continue
        value = arguments[opt.json_key]
        if opt.kind == LIST:
            value = tuple(tuple(item.values()) if isinstance(item, dict) else item for item in value or ())
        values[opt.name] = value
    return owner(**values).validated()


def command_of(spec: dict) -> Any:
    """The typed command of ``spec`` (its position unknown: the vertex's name says which instruction it is)."""
    from ..errors import GGUFPackError, SourcePosition
    from ..options.convert import ConvertOptions
    from ..options.quantize import QuantizeOptions
    from ..packerfile import instructions as ins

    a = spec["arguments"]
    position = SourcePosition(spec.get("file", "Packerfile"), 0)
    original = spec["keyword"]
    if spec["keyword"] == "CONVERT":
        return ins.ConvertCommand(position, original, a["source"], a["dest"], a.get("from"),
                                  options_from_json(ConvertOptions, a))
    if spec["keyword"] == "QUANTIZE":
        return ins.QuantizeCommand(position, original, a["source"], a["dest"], a.get("from"),
                                   options_from_json(QuantizeOptions, a))
    if spec["keyword"] == "IMATRIX":
        return ins.ImatrixCommand(position, original, a["model"], a["calibration"], a["dest"], a.get("from"),
                                  a.get("chunks"), a.get("ctx_size"))
    raise GGUFPackError(f"run_op runs CONVERT, QUANTIZE and IMATRIX, not {spec['keyword']}")


def op_spec(command: Any, *, source: str, from_stage: bool) -> dict:
    """What the frontend passes for ``command`` (the inverse of :func:`command_of`)."""
    return {"keyword": command.keyword, "arguments": command.arguments(), "source": source,
            "from_stage": from_stage}


def run(spec: dict) -> list[Path]:
    from ..errors import GGUFPackError
    from ..image.snapshot import clean_path
    from ..packerfile import instructions as ins
    from ..progress import Progress

    c = command_of(spec)
    # the context, the --from stage, or (no --from, an op that reads its own stage) the stage itself
    source_root = CTX if spec["source"] == "context" else SRC if spec["from_stage"] else CUR
    progress = Progress("plain")
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
