"""``ggufpack run --dry-run`` and the CMD → server argument mapping, on a real built image.

No server starts here: the lines each runtime would run are asserted exactly, the chat template
(spaces, quotes, a newline) must reach the server as one unquoted argument, and what
llama-cpp-python's server cannot honour must be refused clearly.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.options.default_runtime import CannotHonour, cannot_honour
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
#: llama-server's defaults, which the translation states whenever CMD does not (llama-cpp-python's differ)
LLAMA_SERVER_DEFAULTS = ["--n_gpu_layers", "-1", "--flash_attn_type", "auto", "--swa_full", "false",
                         "--n_batch", "2048", "--n_ubatch", "512", "--logits_all", "false", "--n_seq_max", "1",
                         "--n_outputs_max", "1"]
#: llama-server's sampling defaults as request fields (common/common.h), given to every request lacking them
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "max_tokens": None, "mirostat_mode": 0,
            "mirostat_eta": 0.1, "mirostat_tau": 5.0}


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
            "--chat_template", WRAPPED, "--n_threads", "2", *LLAMA_SERVER_DEFAULTS, "--model_alias", "chat:1",
            "--request_defaults", json.dumps({**SAMPLING, "model": "chat:1"}, separators=(",", ":")),
            "--host", "127.0.0.1", "--port", "9001"]
    assert line == shlex.join(argv)
    assert shlex.split(line) == argv  # the template is one argument, its quotes are its own


def test_llama_server_dry_run(image: tuple[Path, str], capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    home, model = image
    monkeypatch.setenv("PATH", "/nonexistent")  # no sideloaded llama-server: the dry run names the bare binary
    line = _dry_run(home, capsys, monkeypatch, "--runtime", "llama-server", "--host", "0.0.0.0", "--", "-ngl", "99")
    assert line == shlex.join(["llama-server", "-m", model, "-c", "256", "--chat-template", WRAPPED, "--jinja",
                               "-ngl", "99", "--alias", "chat:1", "--host", "0.0.0.0", "--port", "8080"])


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
        "--alias", "chat:1", "--host", "0.0.0.0", "--port", "8080",
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
    contexts = {}
    for tag, template in (("named:1", ', "--chat-template", "chatml"'), ("none:1", "")):
        packerfile = (
            "FROM scratch\nCOPY tiny.gguf /m.gguf\nCAT <<EOF /s.txt\nBe nice.\nEOF\n"
            f'CMD ["-m", "/m.gguf", "--system-prompt-file", "/s.txt"{template}]\n'
        )
        contexts[tag] = write_context(tmp_path / tag, packerfile, {"tiny.gguf": gguf})
    # a built-in template's name: refused at plan, at the name (run would refuse the image; issue 14)
    named = cli_main(["plan", str(contexts["named:1"])], home, capsys, monkeypatch)
    assert named.code == 2 and named.err.startswith(
        f"error: {contexts['named:1']}/GGUFPackerfile:6:76: CMD: --chat-template 'chatml' names a built-in template, "
        "but the image's system prompt (--system-prompt-file) needs a Jinja template"), named.err
    with pytest.raises(GGUFPackError, match="needs a Jinja chat template"):  # run keeps its check (pulled images)
        from ggufpack.run.chat import with_system_prompt

        with_system_prompt("chatml", "Be nice.")
    # no template at all: refused when the image is built, at the system prompt's argument, not at run
    with pytest.raises(GGUFPackError, match="no chat template to put it in") as refused:
        do_build(open_store(home), contexts["none:1"], tags=("none:1",))
    assert str(refused.value).startswith(f"{contexts['none:1']}/GGUFPackerfile:6:23: CMD has a system prompt")
    with pytest.raises(GGUFPackError, match="none:1"):
        open_store(home).resolve("none:1")  # no ref was set


def test_parse_options() -> None:
    args = ["-m", "/m.gguf", "-ngl", "-1", "-fa", "on", "--jinja", "--chat-template", "-x {{ y }}", "--lora-scaled",
            "/a.gguf:0.5", "-ts", "3,1", "-sysf", "/s.txt"]
    assert parse_options(args) == [
        Option("-m", ("/m.gguf",)), Option("-ngl", ("-1",)), Option("-fa", ("on",)), Option("--jinja"),
        Option("--chat-template", ("-x {{ y }}",)), Option("--lora-scaled", ("/a.gguf:0.5",)),
        Option("-ts", ("3,1",)), Option("-sysf", ("/s.txt",)),
    ]
    assert [o.canonical for o in parse_options(["-c", "1", "--ctx_size", "2"])] == ["--ctx-size", "--ctx-size"]
    # read as llama-server reads them: its own option table, its own refusals
    with pytest.raises(UsageError, match="-m needs FNAME after it"):
        parse_options(["-m"])
    with pytest.raises(UsageError, match="llama-server takes no positional arguments"):
        parse_options(["model.gguf"])
    with pytest.raises(UsageError, match=r"unknown llama-server option --ctx \(did you mean --ctx-size"):
        parse_options(["--ctx", "2048"])


def _translated(*args: str) -> list[str]:
    """The translation of ``-m /m ARGS``, without the defaults it always states."""
    out = llama_cpp_python_args(parse_options(["-m", "/m", *args]))[0]
    i = out.index("--request_defaults") if "--request_defaults" in out else len(out)
    kept = out[:i] + out[i + 2:]
    for name, value in zip(LLAMA_SERVER_DEFAULTS[::2], LLAMA_SERVER_DEFAULTS[1::2], strict=True):
        if name in kept and kept[kept.index(name) + 1] == value:
            del kept[kept.index(name):kept.index(name) + 2]
    return kept


def test_llama_cpp_python_translation() -> None:
    options = parse_options([
        "-m", "/m", "-c", "4096", "-b", "256", "-ub", "128", "-ngl", "all", "-fa", "on", "-ctk", "q8_0", "-ctv", "f16",
        "--load-mode", "mlock", "-nkvo", "-sm", "row", "-ts", "3,1", "--rope-scaling", "yarn", "--rope-scale", "4",
        "--override-kv", "a.b=int:1", "--override-kv", "c=bool:true", "--lora", "/l.gguf", "-s", "7", "--embeddings",
        "--chat-template", "chatml", "-np", "4", "--jinja", "-a", "tiny", "--pooling", "cls", "--embd-normalize", "1",
    ])
    args, notes = llama_cpp_python_args(options)
    assert args == [
        "--model", "/m", "--n_ctx", "4096", "--n_gpu_layers", "-1", "--flash_attn_type", "on", "--type_k", "8",
        "--type_v", "1", "--use_mmap", "false", "--use_mlock", "true", "--offload_kqv", "false", "--split_mode", "2",
        "--tensor_split", "3", "1", "--rope_scaling_type", "2", "--rope_freq_scale", "0.25", "--seed", "7",
        "--embedding", "true", "--chat_format", "chatml", "--pooling_type", "cls", "--embd_normalize", "1",
        "--swa_full", "false", "--n_batch", "128", "--n_ubatch", "128", "--logits_all", "false", "--n_seq_max", "4",
        "--n_outputs_max", "0", "--model_alias", "tiny", "--kv_overrides", "a.b=int:1", "c=bool:true",
        "--lora_adapter", "/l.gguf", "1.0", "--request_defaults", '{"model":"tiny"}',
    ]  # an embedding model: -np slots, the batch cut to the micro-batch as llama-server does, no request defaults
    assert notes == []
    # the last spelling of a setting wins, as in llama-server
    assert _translated("-c", "1", "--ctx-size", "2") == ["--model", "/m", "--n_ctx", "2"]


def test_sampling_options_become_request_defaults() -> None:
    args, _ = llama_cpp_python_args(parse_options([
        "-m", "/m", "--temp", "0.2", "--top-p", "0.5", "--top-k", "-1", "--min-p", "0", "--repeat-penalty", "1.3",
        "--repeat-last-n", "32", "--presence-penalty", "0.1", "--frequency-penalty", "0.2", "-n", "5", "-s", "42",
        "-r", "STOP", "--reverse-prompt", "END", "--mirostat", "2", "--mirostat-lr", "0.2", "--mirostat-ent", "3",
    ]))
    defaults = json.loads(args[args.index("--request_defaults") + 1])
    assert defaults == {**SAMPLING, "temperature": 0.2, "top_p": 0.5, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.3,
                        "presence_penalty": 0.1, "frequency_penalty": 0.2, "max_tokens": 5, "seed": 42,
                        "mirostat_mode": 2, "mirostat_eta": 0.2, "mirostat_tau": 3.0, "stop": ["STOP", "END"]}
    assert args[args.index("--last_n_tokens_size") + 1] == "32" and args[args.index("--seed") + 1] == "42"
    # -1 is llama-server's "no limit" and its random seed
    unlimited = llama_cpp_python_args(parse_options(["-m", "/m", "-n", "-1", "-s", "-1"]))[0]
    assert json.loads(unlimited[unlimited.index("--request_defaults") + 1]) == SAMPLING and "--seed" not in unlimited


def test_lora_adapters_at_any_scale() -> None:
    assert _translated("--lora", "/a.gguf,/b.gguf", "--lora-scaled", "/c.gguf:0.5,/d.gguf:2") == [
        "--model", "/m", "--n_ctx", "0", "--lora_adapter", "/a.gguf", "1.0", "--lora_adapter", "/b.gguf", "1.0",
        "--lora_adapter", "/c.gguf", "0.5", "--lora_adapter", "/d.gguf", "2.0"]


@pytest.mark.parametrize(("args", "message"), [
    (["-md", "/d.gguf"], "-md /d.gguf (it has no draft-model speculative decoding)"),
    (["--control-vector", "/c.gguf"], "cannot apply control vectors"),
    (["--chat-template", "deepseek3"], "does not know the built-in template 'deepseek3'"),
    (["--dry-multiplier", "0.5"], "--dry-multiplier 0.5 (it has no such option)"),
    (["-np", "4"], "-np 4 (it answers one request at a time (one slot))"),
    (["--top-p", "1.5"], "its requests accept top_p from 0.0 to 1.0"),
    (["--pooling", "rank"], "it has no reranking endpoint"),
    (["--mmproj", "/p.gguf", "--chat-template", "{{ x }}"], "cannot combine a projector"),
])
def test_llama_cpp_python_refuses_what_it_cannot_honour(args: list[str], message: str) -> None:
    with pytest.raises(CannotHonour, match=re.escape(message)) as caught:
        llama_cpp_python_args(parse_options(["-m", "/m", *args]))
    assert "--runtime llama-server" in str(caught.value)
    assert [str(r) for r in cannot_honour(["-m", "/m", "-sysf", "/s.txt", *args])] == [
        str(r) for r in caught.value.refusals]


def test_cannot_honour_is_pure_and_says_nothing_of_what_it_honours() -> None:
    assert cannot_honour(["-m", "/m", "--temp", "0.2", "-n", "5", "-c", "0", "-np", "1", "--embd-normalize", "2",
                          "-fa", "auto", "--swa-full", "-sys", "Be nice.", "--lora-scaled", "/l.gguf:0.5"]) == []
    assert cannot_honour(["-m", "/m", "--embedding", "-np", "8"]) == []  # slots of an embedding model: batches
    assert [(r.index, r.option) for r in cannot_honour(["-m", "/m", "-np", "2", "-md", "/d.gguf"])] == [
        (2, "-np 2"), (4, "-md /d.gguf")]


def test_cache_type_ids_are_ggml_s() -> None:
    import gguf

    from ggufpack.options.default_runtime import CACHE_TYPE_IDS
    from ggufpack.options.server_args import find_option

    spec = find_option("-ctk")
    assert spec is not None and spec.choices is not None and set(CACHE_TYPE_IDS) == set(spec.choices)
    assert {name: int(gguf.GGMLQuantizationType[name.upper()]) for name in CACHE_TYPE_IDS} == CACHE_TYPE_IDS


@pytest.mark.parametrize(("args", "message"), [
    (["--rope-scale"], "--rope-scale needs N after it"),
    (["--rope-scale", "x"], "--rope-scale takes a number"),
    (["--rope-scale", "0"], "--rope-scale takes one number above 0"),
    (["--rope-scale", "inf"], "--rope-scale takes one number above 0"),
    (["-ts"], "-ts needs"),
    (["--lora-scaled", "/l.gguf"], "--lora-scaled takes FNAME:SCALE"),
    (["--lora-scaled", "/l.gguf:x"], "--lora-scaled takes FNAME:SCALE"),
    (["-ctk", "q9_9"], "-ctk takes one of f32, f16"),
])
def test_malformed_values_are_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        llama_cpp_python_args(parse_options(["-m", "/m", *args]))


def test_malformed_extra_argument_is_an_error_not_a_traceback(
        image: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    home, _ = image
    result = cli_main(["run", "chat:1", "--dry-run", "--runtime", "llama-cpp-python", "--", "-c", "abc"],
                      home, capsys, monkeypatch)
    assert result.code == 2 and result.err.startswith("error: -c takes a whole number") and result.out == ""


def test_projector_selects_the_multimodal_handler() -> None:
    assert _translated("--mmproj", "/p") == ["--model", "/m", "--clip_model_path", "/p", "--n_ctx", "0",
                                             "--chat_format", "mtmd"]


def test_ps_lists_nothing_in_a_fresh_home(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli_main(["ps", "--format", "json"], tmp_path / "home", capsys, monkeypatch)
    assert result.code == 0 and json.loads(result.out) == []
    stopped = cli_main(["stop", "abcd"], tmp_path / "home", capsys, monkeypatch)
    assert stopped.code == 1 and "no running detached server matches 'abcd'" in stopped.err
