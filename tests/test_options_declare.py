"""One declaration per CONVERT/QUANTIZE option: the Packerfile, the CLI and the library read the same
values into the same options, refuse the same values, and each surface spells the refusal its own way."""

from __future__ import annotations

import argparse

import pytest

from ggufpack.options.convert import ConvertOptions
from ggufpack.options.declare import PACKERFILE, OptionError, add_arguments, from_arguments
from ggufpack.options.quantize import QuantizeOptions
from ggufpack.packerfile import lex
from ggufpack.plan.graph import build_plan

QUANTIZE_FLAGS = ["--type=q4_k", "--pure", "--imatrix=/m/im.gguf", "--include-weights=attn",
                  "--output-tensor-type=q8_0", "--tensor-type=attn_v=q6_k", "--tensor-type=ffn=q5_0",
                  "--override-kv=general.name=str:x", "--keep-split"]


def _planned(instruction: str) -> object:
    plan = build_plan(lex(f'FROM scratch\n{instruction} /a /b\nCMD ["-m", "/b"]\n', "P"))
    return plan.stages[0].ops[0].command.options  # type: ignore[attr-defined]


def _cli(owner: type, argv: list[str]) -> object:
    parser = argparse.ArgumentParser()
    add_arguments(parser, owner)
    return from_arguments(owner, parser.parse_args(argv)).validated()


def test_packerfile_and_cli_read_the_same_options() -> None:
    cli = [part for flag in QUANTIZE_FLAGS if flag != "--type=q4_k" for part in flag.split("=", 1)] + ["q4_k"]
    planned = _planned("QUANTIZE " + " ".join(QUANTIZE_FLAGS))
    assert planned == _cli(QuantizeOptions, cli)
    assert planned == QuantizeOptions(
        type="Q4_K_M", pure=True, imatrix="/m/im.gguf", include_weights=("attn",), output_tensor_type="Q8_0",
        tensor_types=(("attn_v", "Q6_K"), ("ffn", "Q5_0")), override_kv=("general.name=str:x",), keep_split=True,
    ).validated()
    converted = ConvertOptions("BF16", split_max_size=2_000_000_000)
    assert _planned("CONVERT --type=bf16 --split-max-size=2G") == converted
    assert _cli(ConvertOptions, ["--outtype", "bf16", "--split-max-size", "2G"]) == converted


@pytest.mark.parametrize(("options", "cli", "packerfile"), [
    (ConvertOptions(out_type="Q4"), "--outtype 'Q4' is not a conversion type", "--type='Q4' is not a conversion type"),
    (ConvertOptions(model_class="lora"), "--class lora needs --base DIR", "--class=lora needs --base=<dir>"),
    (QuantizeOptions(type="Q9"), "'Q9' is not a llama.cpp quantization type",
     "--type='Q9' is not a llama.cpp quantization type"),
    (QuantizeOptions(tensor_types=(("a", "f16"), ("(", "f16"))), "--tensor-type '(=f16': '(' is not a regular",
     "--tensor-type='(=f16': '(' is not a regular"),
    (QuantizeOptions(threads=-1), "--threads -1: give a whole number >= 0", None),
])
def test_each_surface_spells_the_refusal(options: object, cli: str, packerfile: str | None) -> None:
    with pytest.raises(OptionError) as info:
        options.validated()  # type: ignore[attr-defined]
    assert str(info.value).startswith(cli)
    if packerfile is not None:
        assert info.value.render(PACKERFILE).startswith(packerfile)


def test_list_items_are_refused_by_index() -> None:
    with pytest.raises(OptionError) as info:
        QuantizeOptions(override_kv=("a=int:1", "b=int:x")).validated()
    assert (info.value.option, info.value.index) == ("override_kv", 1)


def test_numpy_refusals_come_from_the_declarations() -> None:
    assert QuantizeOptions(type="Q8_0", pure=True, output_tensor_type="Q8_0").unsupported_by_numpy() == []
    assert QuantizeOptions(imatrix="x", tensor_types=(("a", "f16"),), keep_split=True).unsupported_by_numpy() == [
        "--imatrix", "--tensor-type", "--keep-split"]
