"""Tar + sha256 of a GGUF-sized layer, against ``openssl dgst -sha256`` on the same file.

    python benchmarks/layer_packing.py [FILE] [--size-mib 1024] [--reps 5]

Without FILE, a random file of ``--size-mib`` is made in a temporary directory. Each repetition
times ``openssl dgst -sha256 FILE`` and ``write_layer`` of FILE into a fresh file beside it (and into
/dev/null, to show what the write costs), interleaved so that machine noise hits both alike. The
input is read once first, so every run reads it from the page cache. Prints the medians, the
throughput in GB/s (10^9 bytes per second) and our throughput as a fraction of openssl's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ggufpack.oci.tarlayer import LayerEntry, write_layer


def make_random_file(path: Path, size: int) -> None:
    chunk = 64 << 20
    with open(path, "wb") as f:
        for offset in range(0, size, chunk):
            f.write(os.urandom(min(chunk, size - offset)))


def time_openssl(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["openssl", "dgst", "-sha256", str(path)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_layer(path: Path, out: Path) -> float:
    entries = [LayerEntry("model.gguf", "file", 0o644, source=path)]
    if out.exists() and out != Path(os.devnull):
        out.unlink()
    start = time.perf_counter()
    with open(out, "wb") as sink:
        write_layer(entries, sink, compress=False, mtime=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", type=Path, help="input file (default: a new random file)")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ggufpack-bench-") as tmp:
        path: Path = args.file or Path(tmp) / "random.gguf"
        if args.file is None:
            make_random_file(path, args.size_mib << 20)
        out = (path.parent if args.file is None else Path(tmp)) / "layer.tar"
        size = path.stat().st_size
        time_openssl(path)  # warm the page cache

        runs: dict[str, list[float]] = {
            "openssl dgst -sha256": [],
            "write_layer -> file": [],
            "write_layer -> /dev/null": [],
        }
        timers: dict[str, Callable[[], float]] = {
            "openssl dgst -sha256": lambda: time_openssl(path),
            "write_layer -> file": lambda: time_layer(path, out),
            "write_layer -> /dev/null": lambda: time_layer(path, Path(os.devnull)),
        }
        for _ in range(args.reps):
            for name, timer in timers.items():
                runs[name].append(timer())
        if out.exists():
            out.unlink()

    print(f"input: {size / 1e9:.3f} GB, {args.reps} repetitions, {os.cpu_count()} CPUs")
    medians = {name: statistics.median(times) for name, times in runs.items()}
    for name, median in medians.items():
        spread = ", ".join(f"{t:.3f}" for t in runs[name])
        print(f"{name:26s} median {median:.3f} s  {size / median / 1e9:.2f} GB/s  (runs: {spread})")
    base = medians["openssl dgst -sha256"]
    for name in ("write_layer -> file", "write_layer -> /dev/null"):
        print(f"ratio {name} / openssl: {base / medians[name]:.2f}")


if __name__ == "__main__":
    main()
