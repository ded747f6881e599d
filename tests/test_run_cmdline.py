"""``ggufpack run --dry-run`` and the CMD → server argument mapping, on a real built image.

No server starts here: the lines each runtime would run are asserted exactly, the chat template
(spaces, quotes, a newline) must reach the server as one unquoted argument, and what
llama-cpp-python's server cannot honour must be refused clearly.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.run.chat import with_system_prompt
from ggufpack.run.cmdline import Option, llama_cpp_python_args, parse_options
from ggufpack.run.runtimes import docker_has_nvidia

from .helpers.builds import cli_main, do_build, open_store, tiny_gguf_bytes, write_context
from .helpers.tiny_run import CHAT_TEMPLATE, SYSTEM_PROMPT, chat_packerfile

#: what the image's system prompt turns the CMD template into, written out by hand
WRAPPED = (
    '{%- if not messages or messages[0]["role"] != "system" -%}'
    '{%- set messages = [{"role": "system", "content": "You are Captain \\"Hook\\".\\nSpeak like a pirate."}]'
    ' + messages -%}{%- endif %}' + CHAT_TEMPLATE
)


def _chat_store(root: Path) -> tuple[Path, str]:
    """A store holding ``chat:1`` (a small real GGUF, a CAT system prompt, a chat template in CMD):
    its home and the runnable file of the model."""
    home = root / "home"
    context = write_context(root / "ctx", chat_packerfile(), {"tiny.gguf": tiny_gguf_bytes(root / "gguf")})
    do_build(open_store(home), context, tags=("chat:1",))
    store = open_store(home)
    model = next(d for d in store.resolve("chat:1").files if store.file_path(d).read_bytes()[:4] == b"GGUF")
    return home, str(store.file_path(model))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _chat_store(tmp_path_factory.mktemp("run-cmdline"))


def _dry_run(home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    result = cli_main(["run", "chat:1", "--dry-run", *args], home, capsys, monkeypatch)
    assert result.code == 0, result.err
    return result.out.removesuffix("\n")


def test_wrapped_template_renders_the_system_prompt_unless_the_chat_has_one() -> None:
    assert with_system_prompt(CHAT_TEMPLATE, SYSTEM_PROMPT.removesuffix("\n")) == WRAPPED
    render = Jinja2ChatFormatter(WRAPPED, eos_token="</s>", bos_token="<s>")
    assert render(messages=[{"role": "user", "content": "hi"}]).prompt == (
        '<s><|system|> You are Captain "Hook".\nSpeak like a pirate. "ok"\n<|user|> hi "ok"\n<|assistant|>')
    own = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert render(messages=own).prompt == '<s><|system|> Be brief. "ok"\n<|user|> hi "ok"\n<|assistant|>'


def test_llama_cpp_python_dry_run(image: tuple[Path, str], capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    home, model = image
    line = _dry_run(home, capsys, monkeypatch, "--runtime", "llama-cpp-python", "-p", "9001", "--", "-t", "2")
    argv = [sys.executable, "-m", "ggufpack.run.lcpp_server", "--model", model, "--n_ctx", "256",
            "--chat_template", WRAPPED, "--n_threads", "2", "--host", "127.0.0.1", "--port", "9001"]
    assert line == shlex.join(argv)
    assert shlex.split(line) == argv  # the template is one argument, its quotes are its own


def test_llama_server_dry_run(image: tuple[Path, str], capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    home, model = image
    monkeypatch.setenv("PATH", "/nonexistent")  # no sideloaded llama-server: the dry run names the bare binary
    line = _dry_run(home, capsys, monkeypatch, "--runtime", "llama-server", "--host", "0.0.0.0", "--", "-ngl", "99")
    assert line == shlex.join(["llama-server", "-m", model, "-c", "256", "--chat-template", WRAPPED, "--jinja",
                               "-ngl", "99", "--host", "0.0.0.0", "--port", "8080"])


def test_docker_dry_run(image: tuple[Path, str], capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    home, model = image
    image_id = open_store(home).resolve("chat:1").id[:12]
    line = _dry_run(home, capsys, monkeypatch, "--runtime", "docker", "-p", "9002")
    gpus = ["--gpus", "all"] if docker_has_nvidia() else []
    image_name = "ghcr.io/ggml-org/llama.cpp:server-cuda" if gpus else "ghcr.io/ggml-org/llama.cpp:server"
    assert line == shlex.join([
        "docker", "run", "--rm", "--name", f"ggufpack-{image_id}-9002", *gpus, "--publish", "127.0.0.1:9002:8080",
        "--volume", f"{home}/files/sha256:/ggufpack/files:ro", image_name,
        "-m", f"/ggufpack/files/{Path(model).name}", "-c", "256", "--chat-template", WRAPPED, "--jinja",
        "--host", "0.0.0.0", "--port", "8080",
    ])


def test_docker_real_run_without_docker_is_a_clear_error(image: tuple[Path, str], capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home, _ = image
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker binary at all
    result = cli_main(["run", "chat:1", "--runtime", "docker", "-p", "9003"], home, capsys, monkeypatch)
    assert result.code == 1
    assert "docker is not installed" in result.err


def test_missing_runnable_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home, model = _chat_store(tmp_path)
    Path(model).unlink()
    result = cli_main(["run", "chat:1", "--dry-run"], home, capsys, monkeypatch)
    assert result.code == 1
    assert "image chat:1: the files of layer sha256:" in result.err and "pull the image again" in result.err
    assert result.out == ""


def test_listen_options_after_dashes_are_refused(image: tuple[Path, str], capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    home, _ = image
    result = cli_main(["run", "chat:1", "--dry-run", "--", "--port", "1234"], home, capsys, monkeypatch)
    assert result.code == 2
    assert "give --port to ggufpack run" in result.err


def test_system_prompt_needs_a_jinja_template(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    gguf = tiny_gguf_bytes(tmp_path / "g")  # no chat template in its metadata
    for tag, template in (("named:1", ', "--chat-template", "chatml"'), ("none:1", "")):
        packerfile = (
            "FROM scratch\nCOPY tiny.gguf /m.gguf\nCAT <<EOF /s.txt\nBe nice.\nEOF\n"
            f'CMD ["-m", "/m.gguf", "--system-prompt-file", "/s.txt"{template}]\n'
        )
        do_build(open_store(home), write_context(tmp_path / tag, packerfile, {"tiny.gguf": gguf}), tags=(tag,))
    named = cli_main(["run", "named:1", "--dry-run"], home, capsys, monkeypatch)
    assert named.code == 1 and "needs a Jinja chat template" in named.err and "'chatml'" in named.err
    none = cli_main(["run", "none:1", "--dry-run"], home, capsys, monkeypatch)
    assert none.code == 1 and "no chat template to put it in" in none.err


def test_parse_options() -> None:
    args = ["-m", "/m.gguf", "-ngl", "-1", "-fa", "--jinja", "--chat-template", "-x {{ y }}", "--lora-scaled",
            "/a.gguf", "0.5", "-ts", "3,1"]
    assert parse_options(args) == [
        Option("-m", ("/m.gguf",)), Option("-ngl", ("-1",)), Option("-fa"), Option("--jinja"),
        Option("--chat-template", ("-x {{ y }}",)), Option("--lora-scaled", ("/a.gguf", "0.5")),
        Option("-ts", ("3,1",)),
    ]
    with pytest.raises(UsageError, match="needs 1 value"):
        parse_options(["-m"])
    with pytest.raises(UsageError, match="not an option"):
        parse_options(["model.gguf"])


def test_llama_cpp_python_translation() -> None:
    options = parse_options([
        "-m", "/m", "-c", "4096", "-b", "256", "-ub", "128", "-ngl", "all", "-fa", "on", "-ctk", "q8_0", "-ctv", "f16",
        "--no-mmap", "--mlock", "-nkvo", "-sm", "row", "-ts", "3,1", "--rope-scaling", "yarn", "--rope-scale", "4",
        "--override-kv", "a.b=int:1", "--override-kv", "c=bool:true", "--lora", "/l.gguf", "-s", "7", "--embeddings",
        "--chat-template", "chatml", "-np", "4", "--jinja", "-a", "tiny",
    ])
    args, notes = llama_cpp_python_args(options)
    assert args == [
        "--model", "/m", "--n_ctx", "4096", "--n_batch", "256", "--n_ubatch", "128", "--n_gpu_layers", "-1",
        "--flash_attn", "true", "--type_k", "8", "--type_v", "1", "--use_mmap", "false", "--use_mlock", "true",
        "--offload_kqv", "false", "--split_mode", "2", "--tensor_split", "3", "1", "--rope_scaling_type", "2",
        "--rope_freq_scale", "0.25", "--seed", "7", "--embedding", "true", "--chat_format", "chatml",
        "--model_alias", "tiny", "--lora_path", "/l.gguf", "--kv_overrides", "a.b=int:1", "c=bool:true",
    ]
    assert notes == ["-np 4: llama-cpp-python's server answers one request at a time"]
    # the last spelling of a setting wins, as in llama-server
    assert llama_cpp_python_args(parse_options(["-m", "/m", "-c", "1", "--ctx-size", "2"]))[0] == [
        "--model", "/m", "--n_ctx", "2"]


@pytest.mark.parametrize(("args", "message"), [
    (["-md", "/d.gguf"], "no draft-model speculative decoding"),
    (["--control-vector", "/c.gguf"], "cannot apply control vectors"),
    (["--lora-scaled", "/l.gguf", "0.5"], "at scale 1 only"),
    (["-ngl", "auto"], "cannot fit layers to memory"),
    (["--chat-template", "deepseek3"], "does not know the built-in template 'deepseek3'"),
    (["--temp", "0.2"], "no server-wide sampling defaults"),
    (["--slots"], "it has no such option"),
    (["-ctk", "q9_9"], "an unknown cache type"),
    (["--lora", "/a.gguf", "--lora", "/b.gguf"], "one LoRA adapter at most"),
    (["--mmproj", "/p.gguf", "--chat-template", "{{ x }}"], "cannot combine a projector"),
])
def test_llama_cpp_python_refuses_what_it_cannot_honour(args: list[str], message: str) -> None:
    with pytest.raises(GGUFPackError, match=message) as caught:
        llama_cpp_python_args(parse_options(["-m", "/m", *args]))
    assert "--runtime llama-server" in str(caught.value) or "unknown cache type" in str(caught.value)


@pytest.mark.parametrize(("args", "message"), [
    (["--rope-scale"], "--rope-scale takes one number above 0"),
    (["--rope-scale", "x"], "--rope-scale takes one number above 0"),
    (["--rope-scale", "0"], "--rope-scale takes one number above 0"),
    (["--rope-scale", "inf"], "--rope-scale takes one number above 0"),
    (["-ts"], "-ts takes one value"),
    (["--lora-scaled", "/l.gguf", "x"], "at scale 1 only"),
])
def test_malformed_values_are_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(GGUFPackError, match=message):
        llama_cpp_python_args(parse_options(["-m", "/m", *args]))


def test_malformed_extra_argument_is_an_error_not_a_traceback(
        image: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    home, _ = image
    result = cli_main(["run", "chat:1", "--dry-run", "--runtime", "llama-cpp-python", "--", "--rope-scale", "0"],
                      home, capsys, monkeypatch)
    assert result.code == 2 and result.err.startswith("error: server argument --rope-scale") and result.out == ""


def test_projector_selects_the_multimodal_handler() -> None:
    args, _ = llama_cpp_python_args(parse_options(["-m", "/m", "--mmproj", "/p"]))
    assert args == ["--model", "/m", "--clip_model_path", "/p", "--chat_format", "mtmd"]


def test_ps_lists_nothing_in_a_fresh_home(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli_main(["ps", "--format", "json"], tmp_path / "home", capsys, monkeypatch)
    assert result.code == 0 and json.loads(result.out) == []
    stopped = cli_main(["stop", "abcd"], tmp_path / "home", capsys, monkeypatch)
    assert stopped.code == 1 and "no running detached server matches 'abcd'" in stopped.err
