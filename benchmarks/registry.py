"""Push and pull of a ~1 GiB image over loopback: ggufpack against ``skopeo copy``, same image, same run.

    python benchmarks/registry.py [--size-mib 1024] [--reps 3] [--cache-dir DIR]

Each tool, each repetition, gets a fresh local ``docker-registry`` (Debian's CNCF distribution) on a
free loopback port with its storage on the same disk, so every byte really travels (no blob is
already there, no cross-repository mount is possible). The image is built once (a GGUF of random
bytes, so nothing compresses) into a store that is itself an OCI layout, which skopeo reads directly
(``oci:STORE:REF``). Each repetition pushes, then pulls into a fresh directory:

- ggufpack: ``ggufpack push`` / ``ggufpack pull`` as new processes (startup included); the pull also
  verifies every blob and makes the GGUF runnable in place, which skopeo does not;
- skopeo: ``skopeo copy oci:... docker://...`` and ``skopeo copy docker://... oci:...``.

Prints the median seconds and MiB/s of each, and the ratio ours/skopeo (below 1: we are faster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.rebuild import PACKERFILE, write_model  # noqa: E402
from ggufpack.api import build  # noqa: E402
from ggufpack.progress import Progress  # noqa: E402
from ggufpack.store import Store  # noqa: E402
from tests.helpers.registry import LocalRegistry  # noqa: E402


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ggufpack-bench")
    args = parser.parse_args()
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        sys.exit("needs skopeo and docker-registry (apt-get install skopeo docker-registry)")
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    model = args.cache_dir / f"registry-{args.size_mib}m.gguf"
    if not model.exists():
        write_model(model, args.size_mib << 20)
    work = Path(tempfile.mkdtemp(prefix="ggufpack-bench-registry-", dir=args.cache_dir))
    try:
        context = work / "ctx"
        context.mkdir()
        (context / "GGUFPackerfile").write_text(PACKERFILE, encoding="utf-8")
        os.link(model, context / "model.gguf")
        home = work / "store"
        build(context, tags=["bench:1"], store=Store(home), progress=Progress("quiet"))
        size = sum(p.stat().st_size for p in (home / "blobs" / "sha256").iterdir())
        env = {**os.environ, "GGUFPACK_HOME": str(home), "PYTHONPATH": str(REPO)}
        ours = [sys.executable, "-m", "ggufpack"]
        skopeo = ["skopeo", "--insecure-policy", "copy", "-q"]
        times: dict[str, list[float]] = {"ours push": [], "skopeo push": [], "ours pull": [], "skopeo pull": []}
        for i in range(args.reps):
            shutil.rmtree(home / "state", ignore_errors=True)  # no mount hints from earlier repetitions
            with LocalRegistry(work / f"registry-ours{i}") as reg:
                target = f"{reg.host}/models/bench:1"
                times["ours push"].append(timed([*ours, "push", "bench:1", target, "--plain-http", "-q"], env))
                pull_env = {**env, "GGUFPACK_HOME": str(work / f"pulled{i}")}
                times["ours pull"].append(timed([*ours, "pull", target, "--plain-http", "-q"], pull_env))
            with LocalRegistry(work / f"registry-skopeo{i}") as reg:
                target = f"{reg.host}/models/bench:1"
                times["skopeo push"].append(timed([*skopeo, "--dest-tls-verify=false", f"oci:{home}:bench:1",
                                                   f"docker://{target}"], env))
                times["skopeo pull"].append(timed([*skopeo, "--src-tls-verify=false", f"docker://{target}",
                                                   f"oci:{work / f'skopeo{i}'}:bench"], env))
            for leftover in (f"pulled{i}", f"skopeo{i}", f"registry-ours{i}", f"registry-skopeo{i}"):
                shutil.rmtree(work / leftover, ignore_errors=True)
        mib = size / (1 << 20)
        print(f"image: {mib:.0f} MiB in {len(list((home / 'blobs' / 'sha256').iterdir()))} blobs; "
              f"{args.reps} repetitions, medians:")
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, seconds in medians.items():
            print(f"  {name:<12} {seconds:7.2f} s  {mib / seconds:8.1f} MiB/s")
        for op in ("push", "pull"):
            print(f"  ratio {op} ours/skopeo: {medians[f'ours {op}'] / medians[f'skopeo {op}']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
