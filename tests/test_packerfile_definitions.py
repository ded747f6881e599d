"""Each instruction is one definition (ggufpack/packerfile/instructions/): what the planner, the engine,
the lexer and the reference derive from it agrees with it."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from ggufpack.engine.ops.registry import op_class
from ggufpack.options.convert import ConvertOptions
from ggufpack.options.declare import LIST, options_of
from ggufpack.options.quantize import QuantizeOptions
from ggufpack.packerfile.instructions import BY_KEYWORD, DEFINITIONS, INSTRUCTIONS, Instruction
from ggufpack.packerfile.lexer import HEREDOC_INSTRUCTIONS
from ggufpack.packerfile.reference import render

REPO = Path(__file__).resolve().parents[1]
DEFINED = pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.keyword)


def test_one_definition_per_keyword() -> None:
    assert INSTRUCTIONS == ("FROM", "ARG", "ADD", "COPY", "CAT", "CONVERT", "QUANTIZE", "IMATRIX", "LABEL", "CMD")
    assert len(BY_KEYWORD) == len(DEFINITIONS)


@DEFINED
def test_definition_is_complete(definition: Instruction) -> None:
    assert definition.command.keyword == definition.keyword
    assert definition.summary and definition.usage.startswith(definition.keyword) and definition.examples
    assert all(example.startswith(definition.keyword) for example in definition.examples)
    names = [spec.name for spec in definition.flags]
    assert len(names) == len(set(names))
    for spec in definition.flags:
        assert spec.help and "\n" not in spec.help, spec
        assert spec.kind != LIST or "repeatable" in spec.help, spec
    assert definition.reads in ("context", "stage")
    parameters = list(inspect.signature(definition.parse).parameters)
    assert len(parameters) == 2  # (expansion, flags): one signature for every instruction, ARG included


@DEFINED
def test_op_resolves_and_takes_the_command(definition: Instruction) -> None:
    """An op is named, not imported (the Packerfile layer sits below the engine): the name must resolve to a
    class whose ``command`` is this instruction's command, of the kind the command says it is."""
    if definition.keyword in ("FROM", "ARG"):
        assert definition.op is None  # they shape the plan; the engine runs neither
        with pytest.raises(LookupError):
            op_class(definition.keyword)
        return
    cls = op_class(definition.keyword)
    assert typing.get_type_hints(cls.__init__)["command"] is definition.command
    if definition.command.makes_layer:
        assert callable(getattr(cls, "inputs", None)) and callable(getattr(cls, "run", None))
    else:
        assert callable(getattr(cls, "apply", None))


def test_heredoc_instructions_are_the_lexers() -> None:
    assert {d.keyword for d in DEFINITIONS if d.heredocs} == HEREDOC_INSTRUCTIONS


@pytest.mark.parametrize(("keyword", "owner"), [("CONVERT", ConvertOptions), ("QUANTIZE", QuantizeOptions)])
def test_option_flags_are_the_declarations(keyword: str, owner: type) -> None:
    """CONVERT and QUANTIZE take --from and exactly the Packerfile options their option set declares."""
    flags = {spec.name: spec for spec in BY_KEYWORD[keyword].flags}
    declared = {o.flag: o for o in options_of(owner) if o.packerfile}
    assert set(flags) == {"from", *declared}
    for name, opt in declared.items():
        assert (flags[name].kind, flags[name].default, flags[name].help) == (opt.kind, opt.default, opt.help)


def test_committed_reference_is_generated() -> None:
    """docs/packerfile.md is what the definitions say (regenerate: python scripts/packerfile_reference.py)."""
    assert (REPO / "docs" / "packerfile.md").read_text(encoding="utf-8") == render()
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "packerfile_reference.py"), "--check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_reference_names_every_flag() -> None:
    text = render()
    for definition in DEFINITIONS:
        assert f"## {definition.keyword}\n" in text
        for spec in definition.flags:
            assert f"`{spec.synopsis.replace('|', chr(92) + '|')}`" in text
