"""The house is walked one way: derived from the imports themselves, no layer imports a higher one.

Every ``import`` and ``from ... import`` in every module of the package counts, including those inside
functions and under ``TYPE_CHECKING``: a late import is still a dependency. The layers are those of
DESIGN.md section 1, lowest first; a module may import its own layer or any lower one.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import ggufpack

PACKAGE = Path(ggufpack.__file__).parent

#: the first name under ``ggufpack`` → its layer (lowest first)
LAYERS: dict[str, int] = {
    # utilities: no ggufpack import but each other
    "errors": 0, "util": 0, "terminal": 0, "progress": 0, "version": 0,
    # formats on disk and on the wire; the option declarations (CONVERT/QUANTIZE, llama-server's), pure data
    "oci": 1, "gguf_info": 1, "refs": 1, "options": 1,
    "store": 2,
    "image": 3,
    # what produces files: sources, the converter, llama.cpp; the Packerfile language (pure text)
    "sources": 4, "convert": 4, "quantize": 4, "backends": 4, "packerfile": 4,
    "plan": 5,
    "engine": 6, "frontend": 6,
    "registry": 7, "formats": 7, "estimate": 7, "run": 7, "images": 7,
    # the library API and the command line sit on top
    "api": 8, "__init__": 8, "cli": 9, "__main__": 9,
}

#: packages that must never import the build engine, whatever their layer
NEVER_IMPORT_ENGINE = ("registry", "run", "formats", "image", "store", "oci", "estimate")

#: known violations still to remove, each (importing module, imported package); none today. A test
#: below fails once one is gone, so that this list only ever shrinks.
PENDING: set[tuple[str, str]] = set()


def _top(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "ggufpack":
        raise ValueError(module)
    if len(parts) == 1:
        return "__init__"
    name = parts[1]
    return "cli" if name.startswith("cli") else name


def _module_name(path: Path) -> tuple[str, str]:
    """(dotted module name, the package its relative imports start from)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported ggufpack module, line) for every import in the package."""
    found: list[tuple[str, str, int]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module, package = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                targets = [target]
                if target == "ggufpack":  # ``from ggufpack import x``: x is a submodule or a name of the API
                    targets = [f"ggufpack.{a.name}" if a.name in LAYERS else "ggufpack" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.extend((module, t, node.lineno) for t in targets if t.split(".")[0] == "ggufpack")
    return found


def test_every_package_has_a_layer() -> None:
    tops = {_top(_module_name(p)[0]) for p in PACKAGE.rglob("*.py")}
    assert tops <= set(LAYERS), f"give these a layer in LAYERS (and DESIGN.md): {sorted(tops - set(LAYERS))}"


def test_no_layer_imports_a_higher_one() -> None:
    upward = [
        f"{src} (layer {LAYERS[_top(src)]}) imports {dst} (layer {LAYERS[_top(dst)]}), line {line}"
        for src, dst, line in imports()
        if LAYERS[_top(dst)] > LAYERS[_top(src)]
    ]
    assert not upward, "\n".join(upward)


def test_readers_of_images_never_import_the_engine() -> None:
    bad = [f"{src} imports {dst}, line {line}" for src, dst, line in imports()
           if _top(src) in NEVER_IMPORT_ENGINE and _top(dst) == "engine" and (src, "engine") not in PENDING]
    assert not bad, "\n".join(bad)


def test_pending_violations_still_exist() -> None:
    """A pending violation that was fixed must leave PENDING (the list only shrinks)."""
    seen = {(src, _top(dst)) for src, dst, _ in imports()}
    assert seen >= PENDING, f"remove from PENDING: {sorted(PENDING - seen)}"


def test_the_packerfile_layer_imports_only_text_and_data() -> None:
    allowed = {"errors", "packerfile", "options", "util", "terminal"}
    bad = [f"{src} imports {dst}, line {line}" for src, dst, line in imports()
           if _top(src) in ("packerfile", "options") and _top(dst) not in allowed]
    assert not bad, "\n".join(bad)


def test_layering_test_sees_an_upward_import(tmp_path: Path) -> None:
    """The check itself: an upward import planted in a copy of a low module is found."""
    planted = PACKAGE / "oci" / "_planted_upward.py"
    planted.write_text("from ggufpack.engine import executor  # noqa\n", encoding="utf-8")
    try:
        assert any(src == "ggufpack.oci._planted_upward" and dst == "ggufpack.engine"
                   for src, dst, _ in imports())
    finally:
        planted.unlink()


def test_plan_loads_nothing_native(tmp_path: Path) -> None:
    """``ggufpack plan`` of the quickstart sample imports neither llama_cpp nor numpy."""
    sample = Path(__file__).resolve().parent.parent / "Packerfile.samples" / "quickstart"
    probe = (
        "import sys\n"
        "from ggufpack.cli import main\n"
        f"code = main(['plan', {str(sample)!r}])\n"
        "heavy = sorted(m for m in ('llama_cpp', 'numpy', 'torch', 'gguf') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "GGUFPACK_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout
