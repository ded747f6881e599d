"""The README's library example runs as written, for real, and the API stays light to import.

The example converts and quantizes the quickstart's tiny checkpoint, builds the quickstart, estimates
it, serves it (a real llama.cpp server on a free port) and pushes and pulls it through a real
registry on loopback (Debian's ``docker-registry``); it runs in a fresh interpreter, in a copy of
``Packerfile.samples/`` with a store of its own.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.registry import LocalRegistry, registry_available
from tests.helpers.tiny_run import free_port

ROOT = Path(__file__).resolve().parent.parent
API = ("build", "convert", "quantize", "push", "pull", "estimate", "run")


def _readme_examples() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Library API"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's Library API section has no python example"
    return "\n".join(blocks)


def test_the_readme_example_uses_all_seven() -> None:
    example = _readme_examples()
    for name in API:
        assert re.search(rf"\b{name}\(", example), name


@pytest.mark.skipif(not registry_available(), reason="needs docker-registry, htpasswd and openssl")
def test_readme_library_example_runs(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "Packerfile.samples" / "quickstart", tmp_path / "Packerfile.samples" / "quickstart")
    home = tmp_path / "home"
    with LocalRegistry(tmp_path / "registry") as registry:
        env = {**os.environ, "GGUFPACK_HOME": str(home), "REGISTRY": registry.host, "PORT": str(free_port()),
               "PYTHONPATH": str(ROOT)}
        result = subprocess.run([sys.executable, "-c", _readme_examples()], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("llama ") and lines[0].endswith("['tiny-llama.Q8_0.gguf']"), lines
    assert re.fullmatch(r"sha256:[0-9a-f]{64} 3 op\(s\) run", lines[1]), lines  # CONVERT, QUANTIZE, CAT
    assert re.search(r"'total': [1-9]\d*", lines[2]), lines
    assert re.fullmatch(r"\S+ http://127\.0\.0\.1:\d+/v1", lines[3]), lines
    assert lines[4] == "True", lines
    assert (tmp_path / "out" / "tiny-llama.Q8_0.gguf").is_file()
    listed = subprocess.run([sys.executable, "-m", "ggufpack", "list"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert "quickstart" in listed.stdout and "demo/quickstart" in listed.stdout, listed.stdout
    ps = subprocess.run([sys.executable, "-m", "ggufpack", "ps", "--format", "json"], env=env, capture_output=True,
                        text=True, timeout=120)
    assert ps.stdout.strip() == "[]", ps.stdout  # the with block stopped the server


def test_import_ggufpack_loads_no_engine() -> None:
    probe = ("import sys, ggufpack; "
             "print(sorted(m for m in ('ggufpack.api', 'ggufpack.engine', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_api_names_are_functions_with_documented_returns() -> None:
    """Each is a function, typed and documented, even after its namesake subpackage is imported."""
    probe = (
        "import ggufpack.convert, ggufpack.quantize.api, ggufpack.estimate, ggufpack.run.detached, inspect\n"
        f"from ggufpack import {', '.join(API)}\n"
        "from ggufpack.run import detached\n"
        f"print([inspect.isfunction(f) for f in ({', '.join(API)})], inspect.ismodule(detached))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == f"{[True] * len(API)} True", result.stdout + result.stderr
    import ggufpack

    for name in API:
        function = getattr(ggufpack, name)
        doc = inspect.getdoc(function) or ""
        assert "Returns" in doc and "Raises" in doc, name
        signature = inspect.signature(function)
        assert signature.return_annotation is not inspect.Signature.empty, name
        assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values()), name
