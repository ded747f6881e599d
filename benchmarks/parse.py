"""Benchmark: lex + plan a generated 5,000-instruction Packerfile; prints the median of several runs.

Usage: ``python benchmarks/parse.py [--instructions N] [--runs R] [--profile]``. Asserts nothing: the
target (issue 2) is well under a second for 5,000 instructions.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

from ggufpack.packerfile import lex
from ggufpack.plan import build_plan


def generate(instructions: int) -> str:
    """A Packerfile of about ``instructions`` instructions: 20 per stage, with every construct mixed in."""
    lines = ["# syntax=ggufpack", "ARG BASE=scratch", "ARG QTYPE=Q4_K_M", "ARG ORG=example"]
    count = 3
    stage = 0
    while count < instructions:
        name = f"stage-{stage}"
        lines.append(f"FROM $BASE AS {name}")
        lines.append(f"ARG LOCAL_{stage}=v{stage}")
        lines.append(f'LABEL org.opencontainers.image.title="model {stage}" vendor=${{ORG}} n="$LOCAL_{stage}"')
        lines.append(f"ADD --checksum=sha256:{'ab' * 32} https://example.com/{stage}/model.safetensors /src/")
        lines.append("COPY --chmod=644 --link config.json \\")
        lines.append("    # the tokenizer too")
        lines.append("    tokenizer.json \\")
        lines.append("    /src/")
        lines.append("CAT <<-EOF /prompt.txt")
        lines.append(f"\tYou are model {stage} from ${{ORG}}.")
        lines.append("\tAnswer briefly.")
        lines.append("\tEOF")
        lines.append("COPY <<A <<'B' /cfg/")
        lines.append("a = $QTYPE")
        lines.append("A")
        lines.append("b = $QTYPE")
        lines.append("B")
        if stage:
            lines.append(f"COPY --from=stage-{stage - 1} /q.gguf /prev.gguf")
        else:
            lines.append("COPY --from=context /readme.md /readme.md")
        lines.append("CONVERT --type=F16 /src /m.gguf")
        lines.append("QUANTIZE --type=${QTYPE} --tensor-type=attn_v=q8_0 --exclude-weights=output /m.gguf /q.gguf")
        lines.append(f"LABEL stage={stage} \\\n    kind=quantized")
        for extra in range(8):
            lines.append(f"LABEL extra.{extra}=value-{extra}")
        lines.append('CMD ["-m", "/q.gguf", "-c", "4096", "--lora-scaled", "/prev.gguf", "0.5"]')
        count += 20
        stage += 1
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instructions", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile run")
    args = parser.parse_args()

    text = generate(args.instructions)
    parsed = lex(text, "bench")
    plan = build_plan(parsed)
    ops = sum(len(s.ops) for s in plan.stages) + len(plan.stages)
    print(f"{len(parsed.nodes)} instructions ({ops} planned), {len(plan.stages)} stages, "
          f"{len(text.splitlines())} lines, {len(text) / 1024:.0f} KiB")

    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        build_plan(lex(text, "bench"))
        times.append(time.perf_counter() - start)
    print(f"lex+plan: median {statistics.median(times) * 1000:.1f} ms over {args.runs} runs "
          f"(min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms)")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        build_plan(lex(text, "bench"))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
