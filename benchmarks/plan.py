"""Benchmark: wall time of ``ggufpack plan`` of the quickstart sample, a fresh interpreter each run.

Usage: ``python benchmarks/plan.py [--runs R]``. Prints the median of ``ggufpack plan`` and, as the
reference in the same run, the median of ``python -c pass`` (interpreter start-up, the floor any
Python command pays), and their ratio. Asserts nothing; the aim (issue 13) is under 150 ms here.

Both are measured twice: in the environment as it is (where ``PYTHONDONTWRITEBYTECODE=1`` is set, as
in this project's sandbox, every ggufpack module is compiled from source on every run) and with a
bytecode cache (a fresh ``PYTHONPYCACHEPREFIX``, filled by one warm-up run), which is how an installed
package runs: pip writes the ``.pyc`` files at install time.
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
    plan_command = [sys.executable, "-m", "ggufpack", "plan", str(SAMPLE)]
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as pycache:
        env = {**os.environ, "GGUFPACK_HOME": home}
        cached = {**env, "PYTHONPYCACHEPREFIX": pycache}
        cached.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run(plan_command, check=True, stdout=subprocess.DEVNULL, env=cached)  # fills the cache
        for what, environment in (("as the environment is", env), ("with a bytecode cache", cached)):
            floor = median_seconds([sys.executable, "-c", "pass"], args.runs, environment)
            plan = median_seconds(plan_command, args.runs, environment)
            print(f"{what}:")
            print(f"  python -c pass         median {floor * 1000:7.1f} ms")
            print(f"  ggufpack plan (sample) median {plan * 1000:7.1f} ms  ({plan / floor:.2f}x interpreter start-up)")

if __name__ == "__main__":
    main()
