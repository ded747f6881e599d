"""Shared pieces for the build tests: stores, build contexts, CLI runs and store consistency checks.

Everything is real: builds write a real store (an OCI image layout) in a temporary directory,
GGUF files are written with ``gguf.GGUFWriter``, the CLI runs in-process (``cli.main``) or as
``python -m ggufpack`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ggufpack.api import build
from ggufpack.engine import BuildResult
from ggufpack.progress import Progress
from ggufpack.store import Store

from .ggufmaker import make_gguf

REPO = Path(__file__).resolve().parents[2]

PROMPT = "You are a careful assistant.\nAnswer briefly.\n"
NOTES = "Notes for the final stage.\n"

#: A two-stage sample: a prompt stage of two CATs, a final stage copying the model from the
#: context, the prompts from the first stage, then one more CAT. Line numbers matter to
#: :func:`op_id` users: keep them in sync with the tests.
SAMPLE = """\
FROM scratch AS prompts
CAT <<EOF /prompts/system.txt
{prompt}EOF
CAT <<EOF /prompts/extra.txt
{extra}EOF

FROM scratch
LABEL com.example.team={team}
COPY tiny.gguf /models/
COPY --from=prompts /prompts/ /prompts/
COPY docs/ /docs/
CAT <<EOF /notes.txt
{notes}EOF
CMD ["-m", "/models/tiny.gguf", "-c", "512"]
"""


def sample_packerfile(*, prompt: str = PROMPT, extra: str = "extra\n", team: str = "ml", notes: str = NOTES) -> str:
    return SAMPLE.format(prompt=prompt, extra=extra, team=team, notes=notes)


def write_context(directory: Path, packerfile: str, files: Mapping[str, bytes] | None = None) -> Path:
    """A build context: ``GGUFPackerfile`` plus ``files`` (relative path → bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "GGUFPackerfile").write_text(packerfile, encoding="utf-8")
    for name, data in (files or {}).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return directory


def tiny_gguf_bytes(tmp: Path, **kwargs: Any) -> bytes:
    """The bytes of a small real GGUF (a tiny llama) made by :func:`make_gguf`."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = make_gguf(tmp / "made.gguf", **kwargs)
    data = path.read_bytes()
    path.unlink()
    return data


def sample_context(directory: Path, gguf_bytes: bytes, **sample: str) -> Path:
    """The :data:`SAMPLE` context with its model and a docs directory."""
    return write_context(directory, sample_packerfile(**sample), {
        "tiny.gguf": gguf_bytes,
        "docs/README.md": b"# Tiny\n",
        "docs/usage/run.txt": b"llama-server -m /models/tiny.gguf\n",
    })


def make_big_gguf(path: Path, megabytes: int, *, seed: int = 0) -> Path:
    """A real GGUF whose single F32 tensor holds ``megabytes`` MiB of random bytes."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 2**32, size=megabytes * (1 << 18), dtype=np.uint32).view(np.float32)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("big")
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    writer.add_tensor("token_embd.weight", data.reshape(-1, 1024))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def open_store(root: Path) -> Store:
    return Store(root)


def do_build(store: Store, context: Path, *, tags: Sequence[str] = ("sample:1",), **kwargs: Any) -> BuildResult:
    """A library build (quiet progress unless ``progress=`` is given)."""
    kwargs.setdefault("progress", Progress("quiet"))
    return build(context, tags=tags, store=store, **kwargs)


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["GGUFPACK_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(args: Sequence[str], home: Path, *, cwd: Path | None = None, timeout: float = 120,
            input_text: str | None = None, **env: str) -> CliResult:
    """``python -m ggufpack ARGS`` in a subprocess with ``GGUFPACK_HOME=home`` (``input_text`` on stdin)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ggufpack", *args], cwd=cwd, env=cli_env(home, **env), capture_output=True,
        text=True, timeout=timeout, input=input_text,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)


def index_refs(home: Path) -> dict[str, dict[str, Any]]:
    """Ref name → index entry of a store's ``index.json``."""
    index = json.loads((home / "index.json").read_text())
    out = {}
    for entry in index.get("manifests", []):
        ref = (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if ref:
            out[ref] = entry
    return out


def dangling(store: Store) -> list[str]:
    """What the store's refs name but the store lacks: manifest, config and layer blobs, runnable
    files. Empty for a consistent store."""
    missing: list[str] = []
    for record in store.images():
        digest = record.descriptor.digest
        if not store.has_blob(digest):
            missing.append(f"{record.refs}: manifest {digest}")
            continue
        manifest = json.loads(store.blob_path(digest).read_bytes())
        for desc in [manifest["config"], *manifest.get("layers", [])]:
            path = store.blob_path(desc["digest"])
            if not path.is_file() or path.stat().st_size != desc["size"]:
                missing.append(f"{record.refs}: blob {desc['digest']}")
        missing += [f"{record.refs}: file {f}" for f in record.files if not store.has_file(f)]
    return missing


def image_tree(store: Store, manifest: Mapping[str, Any]) -> dict[str, tuple[str, int, bytes | str | None]]:
    """The image's filesystem from its layer tars: path → (kind, mode, bytes | link target | None)."""
    import tarfile

    tree: dict[str, tuple[str, int, bytes | str | None]] = {}
    for layer in manifest["layers"]:
        with tarfile.open(store.blob_path(layer["digest"])) as tar:
            for info in tar:
                name = info.name.rstrip("/")
                if info.isfile():
                    handle = tar.extractfile(info)
                    assert handle is not None
                    tree[name] = ("file", info.mode, handle.read())
                elif info.isdir():
                    tree[name] = ("dir", info.mode, None)
                elif info.issym():
                    tree[name] = ("symlink", info.mode, info.linkname)
                else:
                    tree[name] = (f"type {info.type!r}", info.mode, None)
    return tree


def cli_main(args: Sequence[str], home: Path, capsys: Any, monkeypatch: Any) -> CliResult:
    """``ggufpack ARGS`` in this process (``cli.main``), with ``GGUFPACK_HOME=home``."""
    from ggufpack import cli

    monkeypatch.setenv("GGUFPACK_HOME", str(home))
    capsys.readouterr()
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
