"""The README's library example runs as written, and the API stays light to import."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Library API"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Library API section has no python example"
    return match.group(1)


def test_readme_library_example_builds_the_quickstart(tmp_path: Path) -> None:
    env = {**os.environ, "GGUFPACK_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", _readme_example()], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", result.stdout), result.stdout
    listed = subprocess.run([sys.executable, "-m", "ggufpack", "list"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert "quickstart" in listed.stdout, listed.stdout


def test_import_ggufpack_loads_no_engine() -> None:
    probe = ("import sys, ggufpack; "
             "print(sorted(m for m in ('ggufpack.api', 'ggufpack.engine', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
