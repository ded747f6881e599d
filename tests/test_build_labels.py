"""Image config fields and labels of real GGUF files, checked against gguf's own reader."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from ggufpack.engine import BuildResult
from ggufpack.errors import GGUFPackError
from ggufpack.store import Store

from .helpers.builds import cli_main, do_build, write_context
from .helpers.ggufmaker import make_gguf

OCI = "org.opencontainers.image."


def _expected(path: Path) -> dict:
    """Parameters, bits per weight, file type and metadata computed with gguf.GGUFReader."""
    reader = gguf.GGUFReader(path)
    params = sum(int(t.n_elements) for t in reader.tensors)
    nbytes = sum(int(t.n_bytes) for t in reader.tensors)

    def field(key: str) -> object:
        f = reader.get_field(key)
        return None if f is None else f.contents()

    ftype = field("general.file_type")
    return {
        "params": params, "bpw": nbytes * 8 / params, "ftype": ftype,
        "ftype_name": gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_").removeprefix("ALL_"),
        "arch": field("general.architecture"), "name": field("general.name"), "author": field("general.author"),
        "url": field("general.url"), "description": field("general.description"), "license": field("general.license"),
    }


def _params_label(n: int) -> str:
    for base, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= base:
            return f"{n / base:.2f}".removesuffix(".00") + f" {unit}"
    return str(n)


def _build(tmp_path: Path, packerfile: str, models: dict[str, dict], store: Store | None = None,
           name: str = "ctx", **kwargs: object) -> tuple[BuildResult, dict[str, Path]]:
    context = write_context(tmp_path / name, packerfile)
    paths = {file: make_gguf(context / file, **spec) for file, spec in models.items()}
    store = store or Store(tmp_path / "home")
    return do_build(store, context, **kwargs), paths


@pytest.mark.parametrize("weight_type", ["Q8_0", "F16", "Q4_0"])
def test_model_fields_and_labels_match_the_gguf_reader(tmp_path: Path, weight_type: str) -> None:
    result, paths = _build(
        tmp_path, 'FROM scratch\nCOPY model.gguf /models/\nCMD ["-c", "512", "-m", "/models/model.gguf"]\n',
        {"model.gguf": {"weight_type": weight_type}},
    )
    want = _expected(paths["model.gguf"])
    fields = result.image.config["config"]
    model = fields["Model"]
    assert model["Architecture"] == want["arch"] == "llama"
    assert model["Parameters"] == want["params"]
    assert model["BitsPerWeight"] == pytest.approx(want["bpw"])
    assert model["FileType"] == want["ftype"]
    assert (model["CmdParameterValue"], model["CmdParameterIndex"]) == ("/models/model.gguf", 3)
    assert model["GGUF"]["modelParameters"] == want["params"]
    # large arrays (the vocabulary) are elided, small metadata kept
    tokens = next(kv for kv in model["GGUF"]["header"]["metadataKV"] if kv["key"] == "tokenizer.ggml.tokens")
    assert "array" not in tokens["value"] and tokens["value"]["len"] == 160
    assert fields["Size"] == paths["model.gguf"].stat().st_size
    assert fields["Cmd"] == ["-c", "512", "-m", "/models/model.gguf"]
    assert "Drafter" not in fields and "Adapters" not in fields

    labels = fields["Labels"]
    assert labels == {
        "gguf.model.architecture": "llama", "gguf.model.parameters": _params_label(want["params"]),
        "gguf.model.bpw": f"{want['bpw']:.2f} bpw", "gguf.model.filetype": want["ftype_name"],
        "gguf.model.usage": "text-to-text", "gguf.model.vendor": "ggufpack", f"{OCI}vendor": "ggufpack",
        "gguf.model.name": want["name"], f"{OCI}title": want["name"],
        "gguf.model.authors": want["author"], f"{OCI}authors": want["author"],
        "gguf.model.url": want["url"], f"{OCI}url": want["url"],
        "gguf.model.description": want["description"], f"{OCI}description": want["description"],
        "gguf.model.licenses": want["license"], f"{OCI}licenses": want["license"],
    }
    assert result.image.manifest["annotations"] == labels
    history = result.image.config["history"]
    assert [h.get("empty_layer", False) for h in history] == [False, True]
    assert history[0]["created_by"] == "COPY model.gguf /models/"


def test_embedding_model_usage(tmp_path: Path) -> None:
    result, _ = _build(tmp_path, 'FROM scratch\nCOPY e.gguf /e.gguf\nCMD ["-m", "/e.gguf", "--embedding"]\n',
                       {"e.gguf": {"embedding": True, "arch": "bert"}})
    labels = result.image.config["config"]["Labels"]
    assert labels["gguf.model.usage"] == "embedding"
    assert labels["gguf.model.architecture"] == "bert"


def test_user_label_wins_and_cli_label_wins_over_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    packerfile = ('FROM scratch\nCOPY m.gguf /m.gguf\nLABEL gguf.model.name="Own Name" '
                  'gguf.model.usage=chat org.opencontainers.image.licenses=Apache-2.0\nCMD ["-m", "/m.gguf"]\n')
    result, _ = _build(tmp_path, packerfile, {"m.gguf": {}})
    labels = result.image.config["config"]["Labels"]
    assert labels["gguf.model.name"] == labels[f"{OCI}title"] == "Own Name"
    assert labels["gguf.model.usage"] == "chat"
    # a user label on either side of a mirrored pair sets both
    assert labels[f"{OCI}licenses"] == labels["gguf.model.licenses"] == "Apache-2.0"
    assert labels["gguf.model.architecture"] == "llama"

    run = cli_main(["build", "-q", "--label", "gguf.model.name=From CLI", "--label", "extra=1", "-t", "x",
                    str(tmp_path / "ctx")], tmp_path / "home", capsys, monkeypatch)
    assert run.code == 0, run.err
    labels = Store(tmp_path / "home").read_json(
        Store(tmp_path / "home").read_json(run.out.strip())["config"]["digest"])["config"]["Labels"]
    assert labels["gguf.model.name"] == labels[f"{OCI}title"] == "From CLI"
    assert labels["extra"] == "1" and labels["gguf.model.usage"] == "chat"


def test_drafter_and_adapters(tmp_path: Path) -> None:
    packerfile = ('FROM scratch\nCOPY *.gguf /m/\n'
                  'CMD ["-m", "/m/main.gguf", "-md", "/m/draft.gguf", "--lora-scaled", "/m/a.gguf:0.5", '
                  '"--lora", "/m/b.gguf"]\n')
    result, paths = _build(tmp_path, packerfile, {
        "main.gguf": {"weight_type": "Q8_0"}, "draft.gguf": {"weight_type": "Q4_0", "n_layers": 1},
        "a.gguf": {"n_layers": 1}, "b.gguf": {"n_layers": 1, "seed": 1},
    })
    fields = result.image.config["config"]
    assert fields["Model"]["CmdParameterIndex"] == 1
    assert (fields["Drafter"]["CmdParameterValue"], fields["Drafter"]["CmdParameterIndex"]) == ("/m/draft.gguf", 3)
    assert fields["Drafter"]["Parameters"] == _expected(paths["draft.gguf"])["params"]
    assert [(a["CmdParameterValue"], a["CmdParameterIndex"]) for a in fields["Adapters"]] == [
        ("/m/a.gguf", 5), ("/m/b.gguf", 7)]
    assert fields["Size"] == sum(p.stat().st_size for p in paths.values())
    # labels describe the model, not the drafter
    assert fields["Labels"]["gguf.model.filetype"] == "Q8_0"


def test_base_image_labels_are_rederived_for_a_new_model(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    base, _ = _build(
        tmp_path, 'FROM scratch\nCOPY base.gguf /models/\nLABEL com.example.keep=yes\n'
        'CAT <<EOF /prompt.txt\nhi\nEOF\nCMD ["-m", "/models/base.gguf", "-c", "256"]\n',
        {"base.gguf": {"weight_type": "Q8_0"}}, store=store, name="base", tags=("base:1",),
    )
    assert base.image.config["config"]["Labels"]["gguf.model.filetype"] == "Q8_0"
    result, paths = _build(
        tmp_path, 'FROM base:1\nCOPY new.gguf /models/\nCMD ["-m", "/models/new.gguf"]\n',
        {"new.gguf": {"weight_type": "F16", "extra_kv": {"general.name": "New Model", "general.license": None}}},
        store=store, name="child", tags=("child:1",),
    )
    labels = result.image.config["config"]["Labels"]
    assert labels["gguf.model.filetype"] == "F16"
    assert labels["gguf.model.name"] == labels[f"{OCI}title"] == "New Model"
    assert "gguf.model.licenses" not in labels and f"{OCI}licenses" not in labels  # not carried from the base
    assert labels["gguf.model.parameters"] == _params_label(_expected(paths["new.gguf"])["params"])
    assert labels["com.example.keep"] == "yes"
    assert labels[f"{OCI}base.name"] == "base:1"
    assert labels[f"{OCI}base.digest"] == base.descriptor.digest
    # the base's layers come first, unchanged, and its history too
    assert result.image.manifest["layers"][:2] == base.image.manifest["layers"]
    assert len(result.image.config["history"]) == len(base.image.config["history"]) + 2

    # a stage without CMD inherits the base image's CMD and roles; labels still name the base
    inherited, _ = _build(tmp_path, 'FROM base:1\nCAT <<EOF /prompt.txt\nbye\nEOF\n', {}, store=store, name="inh")
    fields = inherited.image.config["config"]
    assert fields["Cmd"] == ["-m", "/models/base.gguf", "-c", "256"]
    assert fields["Model"]["CmdParameterValue"] == "/models/base.gguf"
    assert fields["Labels"]["gguf.model.filetype"] == "Q8_0"
    assert fields["Labels"][f"{OCI}base.digest"] == base.descriptor.digest


def test_missing_cmd_model_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GGUFPackError, match="no such file"):
        _build(tmp_path, 'FROM scratch\nCOPY m.gguf /m.gguf\nCMD ["-m", "/other.gguf"]\n', {"m.gguf": {}})
