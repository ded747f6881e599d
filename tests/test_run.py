"""``ggufpack run`` for real: llama-cpp-python's server on converted tiny models, spoken to with the
official ``openai`` client; ``--detach``, ``ps``, ``stop``; and the failures (port in use, a server
that exits early or never answers) leave no process behind.

Every server's command line holds the test's own ``GGUFPACK_HOME`` (the model path is under it), so
:func:`processes_with` finds exactly this test's servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers.builds import cli_env, open_store, run_cli
from .helpers.tiny_run import (
    build_image,
    chat_packerfile,
    free_port,
    processes_with,
    tiny_chat_gguf,
    tiny_embedding_gguf,
)

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn", reason="llama-cpp-python's server extra is not installed")

MAX_TOKENS = 4


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with ``chat:1`` (a converted tiny Llama, CAT system prompt, chat template in CMD) and
    ``embed:1`` (a converted tiny BERT served with ``--embedding``)."""
    root = tmp_path_factory.mktemp("run")
    store = open_store(root / "home")
    build_image(store, root, tiny_chat_gguf(root), chat_packerfile(', "-t", "1"'), "chat:1")
    embed = 'FROM scratch\nCOPY tiny.gguf /models/bert.gguf\nCMD ["-m", "/models/bert.gguf", "--embedding"]\n'
    build_image(store, root, tiny_embedding_gguf(root), embed, "embed:1")
    return root / "home"


@pytest.fixture(autouse=True)
def _no_leftovers(home: Path) -> Iterator[None]:
    """Whatever a failing test leaves running is killed (by pid) so that the next test starts clean."""
    yield
    for pid in processes_with(str(home)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ggufpack", "run", *args], env=cli_env(home), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_gone(home: Path, seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while processes_with(str(home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_with(str(home))


@pytest.mark.slow
def test_chat_completion_with_the_packaged_system_prompt(home: Path) -> None:
    port = free_port()
    proc = _start(home, "chat:1", "-p", str(port))
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready.startswith(f"serving chat:1 (llama-cpp-python) at http://127.0.0.1:{port}/v1"), (
            ready, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")

        def chat(messages: list[dict[str, str]]) -> tuple[str, int]:
            reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=MAX_TOKENS,
                                                   temperature=0)
            assert reply.usage is not None
            return reply.choices[0].message.content or "", reply.usage.prompt_tokens

        def complete(prompt: str) -> tuple[str, int]:
            reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
            assert reply.usage is not None
            return reply.choices[0].text, reply.usage.prompt_tokens

        # The chat prompt must be CMD's template rendered with the CAT'd system prompt first: the same
        # text sent raw to the completions endpoint (which adds the BOS the template writes) gives the
        # same prompt tokens and, greedy, the same reply.
        user = [{"role": "user", "content": "hello there"}]
        system = 'You are Captain "Hook".\nSpeak like a pirate.'
        with_system = f'<|system|> {system} "ok"\n<|user|> hello there "ok"\n<|assistant|>'
        assert chat(user) == complete(with_system)
        without = complete('<|user|> hello there "ok"\n<|assistant|>')
        assert chat(user)[1] > without[1]
        own = [{"role": "system", "content": "Be brief."}, *user]  # a request's own system message wins
        assert chat(own) == complete('<|system|> Be brief. "ok"\n<|user|> hello there "ok"\n<|assistant|>')
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(30)
    assert status == 0  # the server shut down cleanly on the forwarded SIGINT, and run exits with its status
    assert _wait_gone(home) == []


@pytest.mark.slow
def test_detached_embedding_server_ps_and_stop(home: Path) -> None:
    port = free_port()
    started = run_cli(["run", "embed:1", "--detach", "-p", str(port)], home, timeout=120)
    assert started.code == 0, started.err
    run_id = started.out.strip()
    try:
        listed = json.loads(run_cli(["ps", "--format", "json"], home).out)
        assert [(r["id"], r["ref"], r["runtime"], r["url"]) for r in listed] == [
            (run_id, "embed:1", "llama-cpp-python", f"http://127.0.0.1:{port}")]
        pid = listed[0]["pid"]
        assert pid in processes_with(str(home))
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        result = client.embeddings.create(model="bert", input=["a tiny test", "another one"])
        vectors = [item.embedding for item in result.data]
        assert len(vectors) == 2 and len(vectors[0]) == 64 and vectors[0] != vectors[1]
        assert run_cli(["ps"], home).out.splitlines()[1].split()[:3] == [run_id, "embed:1", "llama-cpp-python"]
    finally:
        stopped = run_cli(["stop", "all"], home)
    assert stopped.code == 0 and stopped.out.split() == [run_id]
    assert _wait_gone(home) == []
    assert json.loads(run_cli(["ps", "--format", "json"], home).out) == []
    assert not list((home / "state" / "run").glob(f"{run_id}.*"))


@pytest.mark.slow
def test_api_key_server_is_found_ready_whatever_the_proxy_settings(home: Path) -> None:
    """With ``--api-key`` llama-cpp-python's server answers 401 on every route, its health check's too;
    and an ``http_proxy`` of the environment must not take the loopback health check elsewhere."""
    port, dead = free_port(), free_port()
    proxy = f"http://127.0.0.1:{dead}"
    started = run_cli(["run", "embed:1", "-d", "-p", str(port), "--timeout", "60", "--", "--api-key", "s3cret"],
                      home, timeout=120, http_proxy=proxy, HTTP_PROXY=proxy, no_proxy="", NO_PROXY="")
    try:
        assert started.code == 0, started.err
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="s3cret")
        assert len(client.embeddings.create(model="bert", input=["key"]).data[0].embedding) == 64
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong").models.list()
    finally:
        assert run_cli(["stop", "all"], home).code == 0
    assert _wait_gone(home) == []


def test_port_in_use_is_refused_before_starting(home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(["run", "chat:1", "-p", str(port)], home)
    assert result.code == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.err and "-p/--port" in result.err
    assert processes_with(str(home)) == []


@pytest.mark.slow
@pytest.mark.parametrize("detach", [False, True])
def test_server_exiting_early_is_reported_with_its_log(home: Path, detach: bool) -> None:
    # a quantized V cache needs flash attention: llama.cpp refuses to create the context
    args = ["run", "chat:1", "-p", str(free_port()), *(["--detach"] if detach else []), "--", "-ctv", "q4_0",
            "-fa", "off"]
    result = run_cli(args, home, timeout=120)
    assert result.code == 1
    assert "error: the llama-cpp-python server exited with status 1 before it answered" in result.err
    assert "Failed to create llama_context" in result.err  # the server's own words: its log tail or its output
    if detach:
        assert "(log: " in result.err
        assert json.loads(run_cli(["ps", "--format", "json"], home).out) == []
    assert _wait_gone(home) == []


@pytest.mark.slow
def test_server_not_answering_in_time_is_stopped(home: Path) -> None:
    result = run_cli(["run", "chat:1", "-p", str(free_port()), "--timeout", "0.1"], home, timeout=120)
    assert result.code == 1
    assert "did not answer on" in result.err and "within 0.1 s, so it was stopped" in result.err
    assert _wait_gone(home, 0) == []


def test_sigterm_during_startup_leaves_no_server(home: Path) -> None:
    proc = _start(home, "chat:1", "-p", str(free_port()))
    deadline = time.monotonic() + 60
    while not processes_with(str(home)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(str(home)), "the server never started"
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(30)
    assert status in (0, 128 + signal.SIGTERM)
    assert _wait_gone(home, 0) == []


def test_detached_server_is_recorded_while_starting_and_forgotten_if_interrupted(home: Path) -> None:
    """A detached server is on record from its first moment, so an interruption can never orphan it; one
    interrupted before it answered is stopped and its record dropped."""
    proc = _start(home, "chat:1", "-p", str(free_port()), "--detach")
    records = home / "state" / "run"
    deadline = time.monotonic() + 60
    while not list(records.glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert list(records.glob("*.json")), "no record while the server starts"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) != 0
    assert _wait_gone(home, 0) == []
    assert list(records.glob("*.json")) == []


@pytest.mark.slow
def test_llama_server_runtime_renders_the_system_prompt(home: Path, tmp_path: Path) -> None:
    """A real llama-server (the CPU build of the backend tests) renders the folded system prompt with
    llama.cpp's own Jinja engine: its /apply-template shows the exact prompt."""
    from .helpers.llamacpp_build import install_into

    run_home = tmp_path / "home"
    shutil.copytree(home, run_home, symlinks=True, ignore=shutil.ignore_patterns("state"))
    install_into(run_home)
    port = free_port()
    started = run_cli(["run", "chat:1", "--runtime", "llama-server", "--backend", "llama.cpp-cpu", "-d", "-p",
                       str(port), "--", "-t", "1"], run_home, timeout=120)
    assert started.code == 0, started.err
    try:
        user = {"messages": [{"role": "user", "content": "hello there"}]}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/apply-template", data=json.dumps(user).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            rendered = json.loads(response.read())["prompt"]
        assert rendered == ('<|system|> You are Captain "Hook".\nSpeak like a pirate. "ok"\n'
                            '<|user|> hello there "ok"\n<|assistant|>')
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        reply = client.chat.completions.create(model="tiny", max_tokens=MAX_TOKENS, temperature=0, **user)
        raw = client.completions.create(model="tiny", prompt=rendered, max_tokens=MAX_TOKENS, temperature=0)
        assert reply.usage is not None and raw.usage is not None
        assert reply.usage.prompt_tokens == raw.usage.prompt_tokens
    finally:
        stopped = run_cli(["stop", "all"], run_home)
    assert stopped.code == 0
    assert _wait_gone(run_home) == []


def _embeds(port: int) -> int:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
    return len(client.embeddings.create(model="bert", input=["still here"]).data[0].embedding)


@pytest.mark.slow
def test_remove_and_prune_while_serving_keep_the_served_files(home: Path, tmp_path: Path) -> None:
    """A running server holds a lease on its image: ``rm`` + ``prune --cache`` leave its files, it keeps
    answering, another server starts from the image's digest (detached or not); once the last one stops,
    prune removes them."""
    own = tmp_path / "home"  # a store of its own: the module's images stay for the other tests
    packerfile = 'FROM scratch\nCOPY tiny.gguf /models/bert.gguf\nCMD ["-m", "/models/bert.gguf", "--embedding"]\n'
    digest = build_image(open_store(own), tmp_path, home.parent / "tiny-bert.gguf", packerfile, "served:1")
    manifest = own / "blobs" / "sha256" / digest[7:]
    served = sorted((own / "files" / "sha256").iterdir())
    first, second = free_port(), free_port()
    foreground = None
    try:
        started = run_cli(["run", "served:1", "-d", "-p", str(first)], own, timeout=120)
        assert started.code == 0, started.err
        assert run_cli(["rm", "served:1"], own).out.strip() == "untagged served:1"
        pruned = run_cli(["prune", "--cache"], own)
        assert pruned.code == 0 and "kept 1 image(s) no ref names while running servers use them" in pruned.out
        assert sorted((own / "files" / "sha256").iterdir()) == served and manifest.is_file()
        assert _embeds(first) == 64
        listed = json.loads(run_cli(["list", "--format", "json"], own).out)
        assert [(r["name"], r["id"]) for r in listed] == [("<none>", digest[7:19])]

        # the server restarts from the image it serves, here in the foreground, while the first still runs
        foreground = subprocess.Popen([sys.executable, "-m", "ggufpack", "run", digest, "-p", str(second)],
                                      env=cli_env(own), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert foreground.stdout is not None
        assert foreground.stdout.readline().startswith(f"serving {digest}"), foreground.stderr
        assert run_cli(["stop", "all"], own).code == 0  # the detached one: the foreground one holds the image now
        assert run_cli(["prune"], own).out.startswith("removed 0 blob(s) and 0 file(s)")
        assert _embeds(second) == 64
        foreground.send_signal(signal.SIGINT)
        assert foreground.wait(30) == 0
        foreground = None
        pruned = run_cli(["prune"], own)
        assert pruned.code == 0 and "kept" not in pruned.out
        assert list((own / "files" / "sha256").iterdir()) == [] and not manifest.exists()
        assert list((own / "state" / "leases").iterdir()) == []
        gone = run_cli(["run", digest, "-d", "-p", str(first)], own)
        assert gone.code == 1 and "is not in the local store" in gone.err
    finally:
        if foreground is not None:
            foreground.kill()
        run_cli(["stop", "all"], own)
    assert _wait_gone(own) == []
