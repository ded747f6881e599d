"""Cache-hit rebuild time of an image holding a ~2 GB GGUF.

    python benchmarks/rebuild.py [--size-mib 2048] [--reps 5] [--cache-dir DIR] [--keep-store]

The model is a valid GGUF (one F16 tensor) whose data are random bytes, written once into the
cache directory (default ``$XDG_CACHE_HOME/ggufpack-bench``) and reused by later runs, so that
hashing and packing times are real (a sparse file would read as zeros from no disk at all). Its
mtime is set well in the past, as a downloaded model's would be.

Each run builds into a fresh store beside the cache (same filesystem, so imports can rename):
the first build (hash, import, tar + sha256 of the layer), then ``--reps`` cache-hit rebuilds
through the library and ``--reps`` through the CLI (a new ``python -m ggufpack build`` process
each, startup included). Prints the first build time and the medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ggufpack.api import build  # noqa: E402
from ggufpack.progress import Progress  # noqa: E402
from ggufpack.store import Store  # noqa: E402

PACKERFILE = """\
FROM scratch
COPY model.gguf /models/model.gguf
CAT <<EOF /system-prompt.txt
You are a benchmark.
EOF
CMD ["-m", "/models/model.gguf", "-c", "4096"]
"""

_GGUF_STRING, _GGUF_UINT32 = 8, 4
_F16 = 1
_ALIGN = 32


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_model(path: Path, size: int) -> None:
    """A GGUF v3 file: a few metadata keys and one F16 tensor of about ``size`` bytes of random data."""
    row = 4096
    rows = max(size // (row * 2), 1)
    nbytes = rows * row * 2
    kv = [
        ("general.architecture", _GGUF_STRING, _string("llama")),
        ("general.name", _GGUF_STRING, _string("rebuild benchmark")),
        ("general.file_type", _GGUF_UINT32, struct.pack("<I", 1)),  # MOSTLY_F16
    ]
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kv))
    for key, vtype, value in kv:
        header += _string(key) + struct.pack("<I", vtype) + value
    header += _string("token_embd.weight") + struct.pack("<IQQIQ", 2, row, rows, _F16, 0)
    header += b"\0" * (-len(header) % _ALIGN)
    temp = path.with_name(path.name + ".partial")
    chunk = 64 << 20
    with open(temp, "wb") as f:
        f.write(header)
        written = 0
        while written < nbytes:
            n = min(chunk, nbytes - written)
            f.write(os.urandom(n))
            written += n
    past = time.time() - 86400
    os.utime(temp, (past, past))
    os.replace(temp, path)


def ensure_model(cache: Path, size_mib: int) -> Path:
    path = cache / f"model-{size_mib}MiB.gguf"
    if not path.is_file():
        print(f"writing {path} ({size_mib} MiB of random bytes, once) ...", flush=True)
        started = time.perf_counter()
        write_model(path, size_mib << 20)
        print(f"  {time.perf_counter() - started:.1f} s", flush=True)
    return path


def make_context(cache: Path, model: Path) -> Path:
    context = cache / "context"
    context.mkdir(exist_ok=True)
    (context / "GGUFPackerfile").write_text(PACKERFILE)
    target = context / "model.gguf"
    if not target.exists():
        try:
            os.link(model, target)
        except OSError:
            shutil.copyfile(model, target)
            past = time.time() - 86400
            os.utime(target, (past, past))
    return context


def timed_build(store: Store, context: Path) -> tuple[float, int, int]:
    started = time.perf_counter()
    result = build(context, tags=["bench:rebuild"], store=store, progress=Progress("quiet"))
    return time.perf_counter() - started, result.stats.ops_run, result.stats.ops_cached


def timed_cli(home: Path, context: Path) -> float:
    env = {**os.environ, "GGUFPACK_HOME": str(home), "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ggufpack", "build", "-q", "-t", "bench:rebuild", str(context)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=5)
    default_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ggufpack-bench"
    parser.add_argument("--cache-dir", type=Path, default=default_cache)
    parser.add_argument("--keep-store", action="store_true", help="leave the benchmark store in place")
    args = parser.parse_args(argv)

    cache: Path = args.cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    model = ensure_model(cache, args.size_mib)
    context = make_context(cache, model)
    size = model.stat().st_size
    home = Path(tempfile.mkdtemp(prefix="store-", dir=cache))
    try:
        store = Store(home)
        first, ran, _ = timed_build(store, context)
        print(f"model: {size / 1e9:.2f} GB ({size} bytes)")
        print(f"first build:              {first:8.3f} s  ({ran} ops run, {size / first / 1e9:.2f} GB/s of model)")
        library = []
        for _ in range(args.reps):
            elapsed, ran, cached = timed_build(store, context)
            if ran:
                raise SystemExit(f"a rebuild ran {ran} op(s): the cache missed")
            library.append(elapsed)
        cli = [timed_cli(home, context) for _ in range(args.reps)]
        print(f"cache-hit rebuild (lib):  {statistics.median(library) * 1000:8.1f} ms  median of {args.reps} "
              f"(min {min(library) * 1000:.1f}, max {max(library) * 1000:.1f}; {cached} ops cached)")
        print(f"cache-hit rebuild (CLI):  {statistics.median(cli) * 1000:8.1f} ms  median of {args.reps} "
              f"(a new process each, startup included)")
    finally:
        if args.keep_store:
            print(f"store kept at {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
