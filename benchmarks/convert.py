"""HF → GGUF F16 conversion of a ~0.5B-parameter bf16 Llama: ggufpack against llama.cpp's convert_hf_to_gguf.py.

    python benchmarks/convert.py [--reps 3] [--cache-dir DIR] [--reference PATH] [--hidden 1024 --layers 24 ...]

The checkpoint is made once and kept in ``--cache-dir`` (default ``/tmp/ggufpack-bench-convert``):
a ``LlamaConfig`` from transformers (hidden 1024, 24 layers, intermediate 4096, 16 heads, vocab
32000: 0.47 B parameters), random bf16 weights written straight to ``model.safetensors`` with the
``safetensors`` package (no model is instantiated), and the tiny byte-level BPE tokenizer of
``examples/make_tiny_model.py``, whose ~500 tokens the converters pad to the config's vocabulary.

Each repetition converts it to F16 with both tools, alternately, each in a fresh process (startup
and imports included): ``python -m ggufpack.cli convert`` (or ``ggufpack.convert.convert`` when the
CLI lacks the command) and the reference script run with its own gguf-py (``PYTHONPATH=<llama.cpp>/gguf-py``).
Wall time is measured around the child; peak RSS is the child's own ``ru_maxrss``, read by a small
launcher process (Linux charges a freshly exec'd process with the RSS high-water mark of whatever it
was forked from, here the launcher's ~14 MiB rather than this script's).
The file is read once before timing so that both tools start from a warm page cache.

The reference identifies BPE tokenizers by hashing their output on a fixed text and refuses hashes
it does not know, as ours (trained here) is. It is run through a three-line shim that answers its
``get_vocab_base_pre`` with ``llama-bpe``, the pre-tokenizer our tokenizer really uses (Llama 3's
split) and the one ggufpack detects; nothing on the weights' path changes.

Finally both outputs are compared tensor by tensor: names, shapes, types and bytes. The order
differs by design: the reference writes tensors in checkpoint order (alphabetical: ``lm_head``
first), ggufpack embeddings first, then the blocks, then the head, as llama.cpp lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
REFERENCE = Path("/tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py")

# Runs convert_hf_to_gguf.py (argv[1]) with the remaining arguments, naming our tokenizer's pre-tokenizer.
REFERENCE_SHIM = """\
import runpy, sys
script = sys.argv[1]; sys.argv = sys.argv[1:]; sys.path.insert(0, script.rsplit('/', 1)[0])
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: 'llama-bpe'
runpy.run_path(script, run_name='__main__')
"""


# Runs argv[2:] and writes [exit code, peak RSS in KiB, CPU seconds] as JSON to argv[1].
LAUNCHER = """\
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], 'w') as f:
    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss, usage.ru_utime + usage.ru_stime], f)
"""


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def name(self) -> str:
        return (f"llama-h{self.hidden}-l{self.layers}-i{self.intermediate}-a{self.heads}-kv{self.kv_heads}"
                f"-v{self.vocab}-bf16")


def _tiny_model_maker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_tiny_model", REPO / "examples" / "make_tiny_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_checkpoint(directory: Path, shape: Shape, seed: int = 0) -> Path:
    """The benchmark checkpoint in ``directory``, made unless a complete one is already there."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    done = directory / ".complete"
    if done.is_file():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    maker = _tiny_model_maker()
    tok = maker.train_tokenizer()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=maker.BOS, eos_token=maker.EOT, pad_token=maker.EOS,
        clean_up_tokenization_spaces=False,
    ).save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tok.token_to_id(maker.BOS), eos_token_id=tok.token_to_id(maker.EOT),
        architectures=["LlamaForCausalLM"], torch_dtype="bfloat16",
    )
    config.save_pretrained(directory)

    head_dim = shape.hidden // shape.heads
    h, kv, ff = shape.hidden, shape.kv_heads * head_dim, shape.intermediate
    shapes = {"model.embed_tokens.weight": (shape.vocab, h), "model.norm.weight": (h,),
              "lm_head.weight": (shape.vocab, h)}
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (ff, h), p + "mlp.up_proj.weight": (ff, h), p + "mlp.down_proj.weight": (h, ff),
        }
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        name: (torch.ones(dims) if len(dims) == 1 else torch.randn(dims, generator=gen) * 0.02).to(torch.bfloat16)
        for name, dims in shapes.items()
    }
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    done.write_text(json.dumps(shape.__dict__))
    return directory


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float  # user + system, all threads: less sensitive than wall time to a busy machine
    peak_rss_mib: float


def run_child(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` to completion through :data:`LAUNCHER`: its wall and CPU time and peak RSS, output in ``log``."""
    usage = log.with_suffix(".rusage")
    with log.open("wb") as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", LAUNCHER, str(usage), *argv], stdout=out, stderr=subprocess.STDOUT,
                       env=env, cwd=REPO, check=True)
        seconds = time.perf_counter() - start
    code, max_rss_kib, cpu_seconds = json.loads(usage.read_text())
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({code}):\n{tail}")
    return Run(seconds, cpu_seconds, max_rss_kib / 1024)


def ours_command(src: Path, out: Path) -> list[str]:
    """``ggufpack convert`` through the CLI when it has the command, else the library in a fresh process."""
    probe = subprocess.run([sys.executable, "-m", "ggufpack.cli", "convert", "--help"], cwd=REPO,
                           capture_output=True, check=False)
    if probe.returncode == 0 and b"--outtype" in probe.stdout:
        return [sys.executable, "-m", "ggufpack.cli", "convert", str(src), "--outfile", str(out), "--outtype", "F16"]
    code = "import sys; from ggufpack.convert import convert; convert(sys.argv[1], sys.argv[2], out_type='F16')"
    return [sys.executable, "-c", code, str(src), str(out)]


def reference_command(script: Path, src: Path, out: Path, outtype: str = "f16") -> tuple[list[str], dict[str, str]]:
    """convert_hf_to_gguf.py on ``src`` with its own gguf-py, through :data:`REFERENCE_SHIM`."""
    env = {**os.environ, "PYTHONPATH": str(script.parent / "gguf-py")}
    return [sys.executable, "-c", REFERENCE_SHIM, str(script), str(src), "--outfile", str(out),
            "--outtype", outtype], env


def compare(ours: Path, ref: Path) -> list[str]:
    """Differences between two GGUF files' tensors (names, shapes, types, bytes); empty if none."""
    import gguf
    import numpy as np

    a, b = gguf.GGUFReader(ours).tensors, gguf.GGUFReader(ref).tensors
    problems: list[str] = []
    only = sorted({t.name for t in a} ^ {t.name for t in b})
    if only:
        problems.append(f"tensors in one file only: {only[:5]}")
    theirs = {t.name: t for t in b}
    for t in a:
        u = theirs.get(t.name)
        if u is None:
            continue
        if list(t.shape) != list(u.shape) or t.tensor_type != u.tensor_type:
            problems.append(f"{t.name}: {t.tensor_type.name} {list(t.shape)} vs {u.tensor_type.name} {list(u.shape)}")
        elif not np.array_equal(t.data.view(np.uint8), u.data.view(np.uint8)):
            problems.append(f"{t.name}: bytes differ")
    return problems


def _warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass


def _median(runs: list[Run]) -> Run:
    return Run(*(statistics.median(getattr(r, f.name) for r in runs) for f in dataclasses.fields(Run)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "ggufpack-bench-convert")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="convert_hf_to_gguf.py")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--intermediate", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    args = parser.parse_args(argv)

    shape = Shape(args.hidden, args.layers, args.intermediate, args.heads, args.kv_heads, args.vocab)
    src = args.cache_dir / shape.name
    print(f"checkpoint: {src}", flush=True)
    make_checkpoint(src, shape)
    weights = src / "model.safetensors"
    print(f"  {weights.stat().st_size / 2**30:.2f} GiB of bf16 weights", flush=True)
    _warm(weights)

    work = Path(tempfile.mkdtemp(prefix="runs-", dir=args.cache_dir))
    try:
        ours_out, ref_out = work / "ours.gguf", work / "reference.gguf"
        ours_argv = ours_command(src, ours_out)
        ref_argv, ref_env = reference_command(args.reference, src, ref_out)
        print(f"  ggufpack runs as: python {' '.join(ours_argv[1:4])} ...", flush=True)
        results: dict[str, list[Run]] = {"ggufpack": [], "reference": []}
        for rep in range(args.reps):
            order = [("ggufpack", ours_argv, None), ("reference", ref_argv, ref_env)]
            for tool, cmd, env in order if rep % 2 == 0 else order[::-1]:
                out = ours_out if tool == "ggufpack" else ref_out
                out.unlink(missing_ok=True)
                run = run_child(cmd, work / f"{tool}.log", env)
                results[tool].append(run)
                print(f"  rep {rep + 1} {tool:9s} {run.seconds:7.2f} s  {run.cpu_seconds:7.2f} s CPU  "
                      f"{run.peak_rss_mib:6.0f} MiB", flush=True)

        ours, ref = _median(results["ggufpack"]), _median(results["reference"])
        print(f"\nmedians of {args.reps} (F16 from bf16, {os.cpu_count()} CPUs):")
        for tool, run in (("ggufpack", ours), ("reference", ref)):
            print(f"  {tool:9s}  {run.seconds:7.2f} s wall  {run.cpu_seconds:7.2f} s CPU  "
                  f"{run.peak_rss_mib:6.0f} MiB peak RSS")
        print(f"  ours/reference: wall {ours.seconds / ref.seconds:.2f}, CPU {ours.cpu_seconds / ref.cpu_seconds:.2f}, "
              f"peak RSS {ours.peak_rss_mib / ref.peak_rss_mib:.2f}")
        problems = compare(ours_out, ref_out)
        print("outputs: same tensor names, shapes, types and bytes" if not problems
              else "outputs differ:\n  " + "\n  ".join(problems[:20]))
        return 1 if problems else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
