"""The CLI around the engine: build, list, inspect, tag, remove, prune; exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ggufpack.store import Store

from .helpers.builds import (
    CliResult,
    cli_main,
    dangling,
    have,
    run_cli,
    sample_context,
    sample_packerfile,
    skopeo,
    tiny_gguf_bytes,
    write_context,
)

COLUMNS = ["NAME", "TAG", "ID", "ARCH", "PARAMS", "BPW", "TYPE", "USAGE", "CREATED", "SIZE"]


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_gguf_bytes(tmp_path_factory.mktemp("gguf"), weight_type="Q8_0")


class Cli:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.home, self.capsys, self.monkeypatch = home, capsys, monkeypatch

    def __call__(self, *args: str) -> CliResult:
        return cli_main(args, self.home, self.capsys, self.monkeypatch)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return Cli(tmp_path / "home", capsys, monkeypatch)


@pytest.fixture
def built(cli: Cli, tmp_path: Path, gguf_bytes: bytes) -> tuple[Path, str]:
    context = sample_context(tmp_path / "ctx", gguf_bytes)
    run = cli("build", "--progress", "plain", "-t", "example.com/team/sample:1", str(context))
    assert run.code == 0, run.err
    assert "CACHED" not in run.err and "tagged example.com/team/sample:1" in run.err
    return context, run.out.strip()


def test_list_table_and_json(cli: Cli, built: tuple[Path, str], gguf_bytes: bytes) -> None:
    _, digest = built
    table = cli("list")
    assert table.code == 0
    header, row = table.out.splitlines()
    assert header.split()[: len(COLUMNS)] == COLUMNS
    cells = row.split("  ")
    cells = [c.strip() for c in cells if c.strip()]
    assert cells[:8] == ["example.com/team/sample", "1", digest[7:19], "llama", "102.72 K", "8.57 bpw", "Q8_0",
                         "text-to-text"]
    assert cells[8] == "just now"
    listed = json.loads(cli("list", "--format", "json").out)
    assert len(listed) == 1
    item = listed[0]
    assert (item["name"], item["tag"], item["id"]) == ("example.com/team/sample", "1", digest[7:19])
    assert item["size"] == len(gguf_bytes)
    assert item["disk_usage"] >= len(gguf_bytes)  # the layer blob at least
    assert item["filetype"] == "Q8_0" and item["usage"] == "text-to-text"
    # numbers are JSON numbers, not the table's text: a count, bits per weight, bytes
    assert item["parameters"] == 102720 and item["bpw"] == pytest.approx(8.57, abs=0.005)
    assert all(type(item[key]) is int for key in ("parameters", "size", "disk_usage"))


def test_inspect_text_and_json(cli: Cli, built: tuple[Path, str]) -> None:
    _, digest = built
    text = cli("inspect", "example.com/team/sample:1")
    assert text.code == 0
    assert f"ID:        {digest[7:]}" in text.out
    assert 'Cmd:       ["-m", "/models/tiny.gguf", "-c", "512"]' in text.out
    assert "Model:     /models/tiny.gguf (llama, 102720 parameters, 8.57 bpw)" in text.out
    assert "  com.example.team=ml" in text.out
    assert "COPY tiny.gguf /models/" in text.out
    info = json.loads(cli("inspect", "--format", "json", digest[7:15]).out)
    assert info["digest"] == digest and info["refs"] == ["example.com/team/sample:1"]
    assert info["model"]["FileType"] == 7 and info["model"]["Parameters"] == 102720
    assert [layer["created_by"] for layer in info["layers"]] == [
        "COPY tiny.gguf /models/", "COPY --from=prompts /prompts/ /prompts/", "COPY docs/ /docs/",
        "CAT <<EOF /notes.txt"]
    assert info["manifest"]["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert info["labels"]["gguf.model.filetype"] == "Q8_0"


def test_tag_and_remove(cli: Cli, built: tuple[Path, str]) -> None:
    _, digest = built
    assert cli("tag", "example.com/team/sample:1", "other").out.strip() == "other:latest"
    assert cli("tag", digest[7:13], "third:2").code == 0
    refs = {(r["name"], r["tag"]) for r in json.loads(cli("list", "--format", "json").out)}
    assert refs == {("example.com/team/sample", "1"), ("other", "latest"), ("third", "2")}
    if have("skopeo"):
        assert json.loads(skopeo("inspect", f"oci:{cli.home}:other:latest").stdout)["Digest"] == digest

    removed = cli("remove", "other")
    assert removed.code == 0 and removed.out.strip() == "untagged other:latest"
    # by ID: every ref of the image goes (with -f, as refs of two repositories name it)
    removed = cli("rm", "-f", digest[7:17])
    assert removed.code == 0
    assert sorted(removed.out.split()) == ["example.com/team/sample:1", "third:2", "untagged", "untagged"]
    assert json.loads(cli("list", "--format", "json").out) == []
    missing = cli("remove", "nothing:here")
    assert missing.code == 2 and "no image 'nothing:here'" in missing.err


def test_build_warns_about_build_args_no_arg_declares(cli: Cli, tmp_path: Path, gguf_bytes: bytes) -> None:
    """As ``plan`` does and Docker ("One or more build-args [X] were not consumed"), even with -q."""
    context = sample_context(tmp_path / "ctx", gguf_bytes)
    run = cli("build", "-q", "--build-arg", "NOT_DECLARED=1", "--build-arg", "OTHER=2", str(context))
    assert run.code == 0, run.err
    assert run.err.splitlines() == ["warning: build args not declared by any ARG: NOT_DECLARED, OTHER"]
    assert run.out.strip().startswith("sha256:")
    assert "warning" not in cli("build", "-q", str(context)).err


def test_build_help_names_the_default_platform(tmp_path: Path) -> None:
    from ggufpack.oci.platform import DEFAULT_PLATFORM

    for command in ("build", "plan"):
        shown = " ".join(run_cli([command, "--help"], tmp_path / "home").out.split())
        assert f"(default: {DEFAULT_PLATFORM} on every machine" in shown and "this machine's" not in shown


def test_remove_by_id_of_an_image_several_repositories_name_needs_force(cli: Cli, built: tuple[Path, str]) -> None:
    """Docker's ``rmi <ID>``: refs of several repositories need ``-f`` (the refusal names them; each can
    still be removed by name), refs of one repository go together (``test_tag_and_remove`` forces)."""
    _, digest = built
    assert cli("tag", digest, "first:1").code == 0 and cli("tag", digest, "second:1").code == 0
    before = (cli.home / "index.json").read_bytes()
    for target in (digest[7:19], digest):
        refused = cli("rm", target)
        assert refused.code == 2 and "Traceback" not in refused.err
        assert "image is referenced in multiple repositories" in refused.err
        assert all(ref in refused.err for ref in ("example.com/team/sample:1", "first:1", "second:1"))
        assert "-f" in refused.err
        assert (cli.home / "index.json").read_bytes() == before
    assert cli("rm", "first:1", "second:1").out.split() == ["untagged", "first:1", "untagged", "second:1"]
    assert cli("tag", digest, "example.com/team/sample:2").code == 0
    same_repo = cli("rm", digest[7:19])
    assert same_repo.code == 0
    assert sorted(same_repo.out.split()) == ["example.com/team/sample:1", "example.com/team/sample:2", "untagged",
                                             "untagged"]
    assert json.loads(cli("list", "--format", "json").out) == []


def test_remove_refuses_an_ambiguous_id_prefix(cli: Cli, built: tuple[Path, str]) -> None:
    _, digest = built
    store = Store(cli.home)
    manifest = store.read_json(digest)
    # more real images (the same one with one more annotation) until two IDs share 4 hex digits
    prefixes: dict[str, str] = {digest[7:11]: digest}
    for i in range(5000):
        variant = {**manifest, "annotations": {**manifest["annotations"], "com.example.n": str(i)}}
        other, size, _ = store.put_json(variant)
        from ggufpack.oci.descriptor import Descriptor

        store.set_ref(f"variant:{i}", Descriptor(manifest["mediaType"], other, size))
        if other[7:11] in prefixes:
            break
        prefixes[other[7:11]] = other
    else:
        pytest.fail("no two IDs share a 4-digit prefix")
    prefix = other[7:11]
    before = (cli.home / "index.json").read_bytes()
    run = cli("remove", prefix)
    assert run.code == 2
    assert "ambiguous" in run.err and "Traceback" not in run.err
    assert (cli.home / "index.json").read_bytes() == before
    assert cli("inspect", prefix).code == 2


def test_prune_keeps_cached_blobs_unless_cache(cli: Cli, built: tuple[Path, str], gguf_bytes: bytes) -> None:
    context, first = built
    store = Store(cli.home)
    old_layers = [layer["digest"] for layer in store.read_json(first)["layers"]]
    old_config = store.read_json(first)["config"]["digest"]
    (context / "GGUFPackerfile").write_text(sample_packerfile(notes="changed notes\n"))
    second = cli("build", "-q", "-t", "example.com/team/sample:1", str(context)).out.strip()
    assert second != first

    pruned = cli("prune")
    assert pruned.code == 0 and pruned.out.startswith("removed 2 blob(s)")
    assert not store.has_blob(first) and not store.has_blob(old_config)  # no ref names them
    assert all(store.has_blob(d) for d in old_layers)  # the build cache still does
    # and so the old notes come back from the cache
    (context / "GGUFPackerfile").write_text(sample_packerfile())
    again = cli("build", "--progress", "plain", str(context))
    assert again.out.strip() == first and "(0 op(s) run" in again.err

    pruned = cli("prune", "--cache")
    assert pruned.code == 0 and "dropped" in pruned.out
    assert not store.has_blob(old_layers[-1])  # the old notes layer: only the cache kept it
    assert dangling(store) == []
    if have("skopeo"):
        assert skopeo("inspect", f"oci:{cli.home}:example.com/team/sample:1").returncode == 0
    rebuilt = cli("build", "--progress", "plain", "-t", "example.com/team/sample:1", str(context))
    assert rebuilt.code == 0 and rebuilt.out.strip() == first and "(6 op(s) run, 0 cached)" in rebuilt.err


def test_bad_packerfile_exits_2_with_position(cli: Cli, tmp_path: Path) -> None:
    context = write_context(tmp_path / "bad", "FROM scratch\nCOPY a.txt /a\nFROBNICATE now\n", {"a.txt": b"a"})
    run = cli("build", str(context))
    assert run.code == 2
    assert f"{context}/GGUFPackerfile:3:1:" in run.err
    assert "Traceback" not in run.err and run.out == ""

    (context / "GGUFPackerfile").write_text("FROM scratch\nCOPY --from=nowhere a.txt /a\n")
    run = cli("build", str(context))
    assert run.code == 2 and f"{context}/GGUFPackerfile:2:" in run.err


def test_build_failures_exit_1_without_traceback(cli: Cli, tmp_path: Path, gguf_bytes: bytes) -> None:
    context = write_context(tmp_path / "fail", 'FROM scratch\nCOPY m.gguf /m.gguf\nCOPY missing.txt /x\n'
                            'CMD ["-m", "/m.gguf"]\n', {"m.gguf": gguf_bytes})
    run = cli("build", "-t", "x", str(context))
    assert run.code == 1
    assert f"{context}/GGUFPackerfile:3:1: source 'missing.txt'" in run.err and "Traceback" not in run.err
    (context / "GGUFPackerfile").write_text('FROM scratch\nCOPY m.gguf /m.gguf\nCMD ["-m", "/nope.gguf"]\n')
    run = cli("build", "-t", "x", str(context))
    assert run.code == 1 and "/nope.gguf" in run.err and "Traceback" not in run.err
    (context / "GGUFPackerfile").write_text(
        'FROM scratch\nCAT <<EOF /t.gguf\nnot a model\nEOF\nCMD ["-m", "/t.gguf"]\n')
    run = cli("build", "-t", "x", str(context))
    assert run.code == 1 and "not a readable GGUF" in run.err and "Traceback" not in run.err
    # the same through a real process: exit status and stderr as a user sees them
    proc = run_cli(["build", "-t", "x", str(context)], cli.home)
    assert proc.code == 1 and proc.err.splitlines()[-1].startswith("error: ") and "Traceback" not in proc.err
    # a missing CMD is found before anything runs: a Packerfile error with its position
    (context / "GGUFPackerfile").write_text("FROM scratch\nCOPY m.gguf /m.gguf\n")
    run = cli("build", "-t", "x", str(context))
    assert run.code == 2 and "no CMD" in run.err and f"{context}/GGUFPackerfile:1:1:" in run.err
    assert Store(cli.home).images() == []
    usage = run_cli(["build", "--no-such-flag", str(context)], cli.home)
    assert usage.code == 2 and "Traceback" not in usage.err


@pytest.mark.parametrize("args", [("quantize", "--list-types"), ("list",)], ids=["long", "one-line"])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path, args: tuple[str, ...]) -> None:
    """``ggufpack inspect REF | head -3``: no BrokenPipeError traceback (nor "Exception ignored" at exit for
    output still buffered), the exit status of a SIGPIPE."""
    import os
    import subprocess
    import sys

    from .helpers.builds import cli_env

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    try:
        proc = subprocess.run([sys.executable, "-m", "ggufpack", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=cli_env(tmp_path / "home"), timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr
