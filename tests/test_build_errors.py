"""Every build error names the Packerfile's FILE:LINE:COL of the instruction it happened in.

The location is a value on the error (:attr:`GGUFPackError.location`), attached once by the executor
(the innermost wins, as BuildKit's ``WithLocation``); the error keeps its type, its attributes, its
cause and its traceback. Registry failures while pulling a ``FROM`` base come from a real loopback
registry (Debian's docker-registry), CONVERT and QUANTIZE failures from the real converter and
llama.cpp.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ggufpack.errors import DiskFullError, GGUFPackError, PackerfileError, SourcePosition, UsageError, located
from ggufpack.oci.reader import MalformedImageError
from ggufpack.registry.client import RegistryError
from tests.helpers.builds import cli_main, do_build, open_store, write_context
from tests.helpers.registry import LocalRegistry, registry_available, registry_fixture

needs_registry = pytest.mark.skipif(not registry_available(), reason="needs docker-registry, htpasswd and openssl")

HERE = SourcePosition("GGUFPackerfile", 4, 3)


# --- the error value ------------------------------------------------------------------------------


def test_location_is_attached_once_and_rendered_in_front() -> None:
    exc = GGUFPackError("boom")
    assert str(exc) == "boom" and exc.location is None
    assert exc.with_location(HERE) is exc
    assert str(exc) == "GGUFPackerfile:4:3: boom"
    exc.with_location(SourcePosition("other", 9, 9))  # idempotent: the first (innermost) location stays
    assert exc.location == HERE and str(exc) == "GGUFPackerfile:4:3: boom"


@pytest.mark.parametrize("make", [
    lambda: UsageError("bad usage"),
    lambda: DiskFullError("no space left on device"),
    lambda: MalformedImageError("config is not JSON"),
    lambda: RegistryError("the registry answered 401", status=401),
], ids=["usage", "disk-full", "malformed-image", "registry"])
def test_every_subclass_renders_its_location(make: object) -> None:
    assert callable(make)
    exc = make()
    message = str(exc)
    exc.with_location(HERE)
    assert str(exc) == f"GGUFPackerfile:4:3: {message}"
    assert type(exc) is type(make())  # the same type: callers still catch it as what it is


def test_a_subclass_with_its_own_str_gets_one_prefix() -> None:
    class Outer(GGUFPackError):
        def __str__(self) -> str:
            return f"outer({super().__str__()})"

    class Inner(Outer):
        def __str__(self) -> str:
            return f"inner({super().__str__()})"

    assert str(Outer("m").with_location(HERE)) == "GGUFPackerfile:4:3: outer(m)"
    assert str(Inner("m").with_location(HERE)) == "GGUFPackerfile:4:3: inner(outer(m))"
    assert str(Inner("m")) == "inner(outer(m))"


def test_a_packerfile_error_keeps_its_own_position() -> None:
    exc = PackerfileError("bad flag", SourcePosition("P", 2, 6), "COPY --nope a b\n")
    assert exc.location == exc.position == SourcePosition("P", 2, 6)
    exc.with_location(HERE)
    assert exc.position == SourcePosition("P", 2, 6)
    assert str(exc) == "P:2:6: bad flag\n    COPY --nope a b\n         ^"


def test_located_keeps_the_cause_and_the_traceback() -> None:
    def fail() -> None:
        try:
            raise OSError("the real cause")
        except OSError as cause:
            raise GGUFPackError("wrapped") from cause

    with pytest.raises(GGUFPackError) as info, located(HERE):
        fail()
    assert str(info.value) == "GGUFPackerfile:4:3: wrapped"
    assert isinstance(info.value.__cause__, OSError)
    assert any(entry.name == "fail" for entry in info.traceback)  # the frame that raised it is still there


# --- builds ---------------------------------------------------------------------------------------


plain_registry = registry_fixture("reg-plain")


auth_registry = registry_fixture("reg-auth", auth=("alice", "s3cret"))


@pytest.fixture
def no_saved_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))


@needs_registry
@pytest.mark.usefixtures("no_saved_credentials")
def test_a_registry_refusing_the_from_base_names_the_from_line(
    auth_registry: LocalRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    packerfile = f'# a base that needs a login\nFROM {auth_registry.host}/team/base:1\nCMD ["-m", "/m.gguf"]\n'
    context = write_context(tmp_path / "ctx", packerfile)
    run = cli_main(["build", "--plain-http", "-q", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert run.code == 1 and "Traceback" not in run.err
    assert f"error: {context}/GGUFPackerfile:2:1: " in run.err and "login" in run.err, run.err

    # the library sees the registry's own error type, its status and the location as a value
    with pytest.raises(RegistryError) as info:
        do_build(open_store(tmp_path / "home"), context, plain_http=True)
    assert info.value.status == 401
    assert info.value.location == SourcePosition(f"{context}/GGUFPackerfile", 2, 1)


@needs_registry
@pytest.mark.usefixtures("no_saved_credentials")
def test_a_missing_tag_in_a_later_stage_names_that_from_line(
    plain_registry: LocalRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    packerfile = (f"FROM scratch AS notes\nCAT <<EOF /n.txt\nhi\nEOF\n"
                  f"FROM {plain_registry.host}/team/absent:7\nCOPY --from=notes /n.txt /n.txt\n"
                  'CMD ["-m", "/m.gguf"]\n')
    context = write_context(tmp_path / "ctx", packerfile)
    run = cli_main(["build", "--plain-http", "-q", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert run.code == 1 and "Traceback" not in run.err
    assert f"error: {context}/GGUFPackerfile:5:1: " in run.err and "absent" in run.err, run.err


@needs_registry
@pytest.mark.usefixtures("no_saved_credentials")
def test_debug_shows_the_traceback_from_where_the_registry_error_was_raised(
    auth_registry: LocalRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    context = write_context(tmp_path / "ctx", f'FROM {auth_registry.host}/team/base:1\nCMD ["-m", "/m.gguf"]\n')
    run = cli_main(["build", "--plain-http", "-q", "--debug", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert run.code == 1
    assert "Traceback" in run.err and "RegistryError" in run.err
    assert "ggufpack/registry/" in run.err  # the frames down to where the registry client raised it
    assert run.err.rstrip().splitlines()[-1].startswith(f"error: {context}/GGUFPackerfile:1:1: ")


def test_a_convert_failure_names_the_convert_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    context = write_context(tmp_path / "ctx", 'FROM scratch\nCOPY hf /hf\nCONVERT /hf /m.gguf\nCMD ["-m", "/m.gguf"]\n',
                            {"hf/config.json": b'{"architectures": ["LlamaForCausalLM"]}'})
    run = cli_main(["build", "-q", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert run.code == 1 and "Traceback" not in run.err
    assert f"error: {context}/GGUFPackerfile:3:1: " in run.err and "safetensors" in run.err, run.err
    assert "convert-src" not in run.err and "ingest" not in run.err, run.err  # the Packerfile's names only


def test_a_quantize_failure_names_the_quantize_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("llama_cpp")
    packerfile = ('FROM scratch\nCAT <<EOF /t.gguf\nnot a model\nEOF\n'
                  '  QUANTIZE --type=Q4_0 /t.gguf /q.gguf\nCMD ["-m", "/q.gguf"]\n')
    context = write_context(tmp_path / "ctx", packerfile)
    run = cli_main(["build", "-q", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert run.code == 1 and "Traceback" not in run.err
    assert f"error: {context}/GGUFPackerfile:5:3: " in run.err and "quantize" in run.err, run.err  # indented: col 3


@pytest.mark.parametrize("copy", ["COPY absent.txt /a.txt", "COPY --from=notes /absent.txt /a.txt"],
                         ids=["from-context", "from-stage"])
def test_a_copy_of_a_missing_file_names_the_copy_line(
    copy: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    packerfile = f'FROM scratch AS notes\nCAT <<EOF /n.txt\nhi\nEOF\nFROM scratch\n{copy}\nCMD ["-m", "/m.gguf"]\n'
    context = write_context(tmp_path / "ctx", packerfile, {"present.txt": b"x"})
    run = cli_main(["build", "-q", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert run.code == 1 and "Traceback" not in run.err
    assert f"error: {context}/GGUFPackerfile:6:1: " in run.err and "absent.txt" in run.err, run.err
    assert run.err.count("GGUFPackerfile:6") == 1  # one location, not a prefix on a prefix


def test_a_cmd_naming_a_missing_model_points_at_it_and_lists_the_ggufs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.helpers.builds import tiny_gguf_bytes

    gguf = tiny_gguf_bytes(tmp_path / "g")
    context = write_context(tmp_path / "ctx", 'FROM scratch\nCOPY a.gguf b.gguf /models/\n'
                            'CMD ["-c", "512", "-m", "/models/c.gguf"]\n', {"a.gguf": gguf, "b.gguf": gguf})
    run = cli_main(["build", "-q", "-t", "m:1", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert run.code == 1 and "Traceback" not in run.err  # a build failure, as a missing COPY source is
    assert (f"error: {context}/GGUFPackerfile:3:25: CMD names /models/c.gguf, but the image has no such file; "
            "its GGUF files are /models/a.gguf, /models/b.gguf") in run.err, run.err


def test_plan_refuses_what_llama_server_refuses_in_cmd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unknown option, missing value, bad value, an option that makes the server exit: FILE:LINE:COL at plan."""
    cases = {
        '"--ctx", "2048"': (23, "unknown llama-server option --ctx (did you mean --ctx-size"),
        '"-c"': (23, "-c needs N after it"),
        '"-c", "many"': (29, "-c takes a whole number (N): 'many' is not a whole number"),
        '"--version"': (23, "--version makes llama-server print something and exit"),
        # llama-server's handler throws for an item without :SCALE; the two-value form of older releases
        '"--lora-scaled", "/m.gguf"': (40, "--lora-scaled takes FNAME:SCALE,... (not '/m.gguf')"),
        '"--lora-scaled", "/m.gguf", "0.5"': (51, "unexpected argument '0.5': --lora-scaled takes one argument, "
                                                  "FNAME:SCALE,... (write '/m.gguf:0.5')"),
        # run puts the system prompt into the Jinja template: a built-in template's name has no room for it
        '"--chat-template", "chatml", "-sys", "Be nice."': (42, "--chat-template 'chatml' names a built-in "
                                                                "template, but the image's system prompt (-sys)"),
    }
    for args, (column, message) in cases.items():
        context = write_context(tmp_path / f"ctx{column}{len(args)}",
                                f'FROM scratch\nCOPY m.gguf /m.gguf\nCMD ["-m", "/m.gguf", {args}]\n')
        run = cli_main(["plan", str(context)], tmp_path / "home", capsys, monkeypatch)
        assert run.code == 2, run.err
        assert run.err.startswith(f"error: {context}/GGUFPackerfile:3:{column}: CMD: {message}"), run.err


def test_plan_and_build_say_when_the_default_runtime_cannot_serve_the_cmd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.helpers.builds import tiny_gguf_bytes

    context = write_context(tmp_path / "ctx", 'FROM scratch\nCOPY m.gguf /m.gguf\nCMD ["-m", "/m.gguf", "-np", "2"]\n',
                            {"m.gguf": tiny_gguf_bytes(tmp_path / "g")})
    expected = (f"warning: {context}/GGUFPackerfile:3:23: llama-cpp-python's server (the default runtime) cannot "
                "honour -np 2")
    planned = cli_main(["plan", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert planned.code == 0 and expected in planned.out, planned.out
    built = cli_main(["build", "-q", "-t", "np:1", str(context)], tmp_path / "home", capsys, monkeypatch)
    assert built.code == 0 and expected in built.err and "llama-server" in built.err, built.err
