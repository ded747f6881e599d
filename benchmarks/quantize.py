"""Q4_K_M of one F16 GGUF: ggufpack's in-process quantizer against a built ``llama-quantize``, same run.

    python benchmarks/quantize.py [--reps 3] [--threads N] [--backend llama.cpp | --tool PATH] [--hidden 1024 ...]

The model is ``benchmarks/convert.py``'s random bf16 Llama (default hidden 1024, 24 layers, vocab
32000: 0.47 B parameters, made once in its cache directory) converted to F16 by ggufpack. Each
repetition quantizes it to Q4_K_M twice, alternating which goes first, each in a fresh process
whose wall time (startup included) and peak RSS are measured by ``convert.py``'s launcher:

- in-process: ``ggufpack.quantize.inprocess.quantize`` (llama-cpp-python's ``llama_model_quantize``);
- tool: the ``llama-quantize`` of a built backend (``--backend``, default the meta name ``llama.cpp``)
  or ``--tool``, built from the same llama.cpp sources.

Both use the same thread count. Two figures: the whole process (interpreter start and imports
included: paid once per ``ggufpack`` command, not per QUANTIZE), and the quantize call alone (what a
build pays per QUANTIZE; llama-quantize prints its own). The goal is in-process within 5% of the
tool. Both outputs must be byte-identical (same code, same options); the script exits 1 if they are not.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
QTYPE = "Q4_K_M"
#: ``benchmarks/convert.py``'s model: 0.47 B parameters
DEFAULT_SHAPE = {"hidden": 1024, "layers": 24, "intermediate": 4096, "heads": 16, "kv_heads": 16, "vocab": 32000}
# Prints the time of the quantize call the way llama-quantize prints its own (``main: quantize time = X ms``).
IN_PROCESS = """\
import sys, time
from pathlib import Path
from ggufpack.quantize.inprocess import quantize
from ggufpack.options.quantize import QuantizeOptions
start = time.perf_counter()
quantize(Path(sys.argv[1]), Path(sys.argv[2]), QuantizeOptions(type=sys.argv[3], threads=int(sys.argv[4])))
print(f"main: quantize time = {(time.perf_counter() - start) * 1000:8.2f} ms")
"""
_CALL_TIME = re.compile(r"\w+: quantize time =\s*([0-9.]+) ms")


def _convert_bench() -> ModuleType:
    """``benchmarks/convert.py``: its checkpoint maker, child launcher and medians."""
    spec = importlib.util.spec_from_file_location("bench_convert", REPO / "benchmarks" / "convert.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def f16_model(bench: ModuleType, cache_dir: Path, shape: object) -> Path:
    """The F16 GGUF of the benchmark checkpoint, converted once by ggufpack and kept in ``cache_dir``."""
    from ggufpack.convert import convert

    out = cache_dir / f"{shape.name}-F16.gguf"  # type: ignore[attr-defined]
    if not out.is_file():
        convert(bench.make_checkpoint(cache_dir / shape.name, shape), out, out_type="F16")  # type: ignore[attr-defined]
    return out


def quantize_tool(args: argparse.Namespace) -> Path:
    if args.tool:
        return Path(args.tool)
    from ggufpack.backends import resolve_backend
    from ggufpack.errors import GGUFPackError

    try:
        return resolve_backend(args.backend, "quantize").tool("llama-quantize")
    except GGUFPackError as e:
        raise SystemExit(f"{e}\n(or point --tool at a llama-quantize built from the same sources)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--backend", default="llama.cpp", help="built or sideloaded backend with llama-quantize")
    parser.add_argument("--tool", help="a llama-quantize executable (instead of --backend)")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "ggufpack-bench-convert")
    for field, default in DEFAULT_SHAPE.items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=default)
    args = parser.parse_args(argv)

    bench = _convert_bench()
    shape = bench.Shape(**{field: getattr(args, field) for field in DEFAULT_SHAPE})
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    src = f16_model(bench, args.cache_dir, shape)
    tool = quantize_tool(args)
    print(f"model: {src} ({src.stat().st_size / 2**30:.2f} GiB F16)\ntool:  {tool}", flush=True)
    bench._warm(src)

    work = Path(tempfile.mkdtemp(prefix="quantize-runs-", dir=args.cache_dir))
    try:
        outs = {"in-process": work / "in-process.gguf", "tool": work / "tool.gguf"}
        commands = {
            "in-process": [sys.executable, "-c", IN_PROCESS, str(src), str(outs["in-process"]), QTYPE,
                           str(args.threads)],
            "tool": [str(tool), str(src), str(outs["tool"]), QTYPE, str(args.threads)],
        }
        runs: dict[str, list] = {"in-process": [], "tool": []}
        calls: dict[str, list[float]] = {"in-process": [], "tool": []}
        for rep in range(args.reps):
            order = ["in-process", "tool"] if rep % 2 == 0 else ["tool", "in-process"]
            for name in order:
                outs[name].unlink(missing_ok=True)
                log = work / f"{name}.log"
                run = bench.run_child(commands[name], log)
                runs[name].append(run)
                calls[name].append(float(_CALL_TIME.findall(log.read_text(errors="replace"))[-1]) / 1000)
                print(f"  rep {rep + 1} {name:10s} process {run.seconds:6.2f} s, "
                      f"quantize call {calls[name][-1]:6.2f} s, {run.peak_rss_mib:5.0f} MiB", flush=True)

        print(f"\nmedians of {args.reps} ({QTYPE}, {args.threads} threads, {os.cpu_count()} CPUs):")
        for name, values in runs.items():
            run = bench._median(values)
            print(f"  {name:10s} process {run.seconds:6.2f} s, quantize call {statistics.median(calls[name]):6.2f} s, "
                  f"{run.peak_rss_mib:5.0f} MiB peak RSS")
        for what, ratio in (
            ("process", bench._median(runs["in-process"]).seconds / bench._median(runs["tool"]).seconds),
            ("quantize call", statistics.median(calls["in-process"]) / statistics.median(calls["tool"])),
        ):
            print(f"  in-process / tool, {what}: {ratio:.3f} ({'within' if ratio <= 1.05 else 'OVER'} the 5% goal)")
        same = outs["in-process"].read_bytes() == outs["tool"].read_bytes()
        print("outputs: byte-identical" if same else "outputs DIFFER")
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
