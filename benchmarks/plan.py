"""Benchmark: wall time of ``ggufpack plan`` of the quickstart sample, a fresh interpreter each run.

Usage: ``python benchmarks/plan.py [--runs R]``. Prints the median of ``ggufpack plan`` and, as the
reference in the same run, the median of ``python -c pass`` (interpreter start-up, the floor any
Python command pays), and their ratio. Asserts nothing; the aim (issue 13) is under 150 ms here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "Packerfile.samples" / "quickstart"


def median_seconds(command: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "GGUFPACK_HOME": home}
        floor = median_seconds([sys.executable, "-c", "pass"], args.runs, env)
        plan = median_seconds([sys.executable, "-m", "ggufpack", "plan", str(SAMPLE)], args.runs, env)
    print(f"python -c pass         median {floor * 1000:7.1f} ms")
    print(f"ggufpack plan (sample) median {plan * 1000:7.1f} ms  ({plan / floor:.2f}x interpreter start-up)")


if __name__ == "__main__":
    main()
