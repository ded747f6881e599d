"""``ggufpack run REF PROMPT`` and ``ggufpack run -it REF`` for real: llama-cpp-python's server on
converted tiny models, started on a free loopback port, asked through its API and stopped.

Images: ``chat:1`` (a converted tiny Llama with a CAT'd system prompt and a chat template in CMD),
``embed:1`` (a converted tiny BERT whose CMD lacks ``--embedding``: its GGUF says what it is),
``endless:1`` (the Llama with a zero output head: greedy, it says ``!`` until it is stopped, so a
reply is always under way when the test interrupts it) and ``broken:1`` (a GGUF that claims three
blocks and holds two: it builds, and llama.cpp refuses to load it). Every server's command line
holds the module's ``GGUFPACK_HOME``, so :func:`processes_with` finds exactly the servers left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers.builds import cli_env, open_store, run_cli
from .helpers.ggufmaker import make_gguf
from .helpers.tiny_run import (
    CHAT_TEMPLATE,
    build_image,
    chat_packerfile,
    processes_with,
    tiny_chat_gguf,
    tiny_embedding_gguf,
)

pytest.importorskip("uvicorn", reason="llama-cpp-python's server extra is not installed")

GREEDY = ["--", "--temp", "0"]


def _endless_gguf(directory: Path) -> Path:
    """The tiny chat model with every output weight zero: all logits tie and greedy decoding picks token 0
    (``!``) forever, never the end-of-sequence token."""
    import gguf

    out = directory / "endless.gguf"
    shutil.copyfile(tiny_chat_gguf(directory), out)
    reader = gguf.GGUFReader(out, "r+")
    head = next(t for t in reader.tensors if t.name == "output.weight")
    head.data[...] = 0
    reader.data.flush()
    del reader
    return out


def _packerfile(cmd: list[str]) -> str:
    return f"FROM scratch\nCOPY tiny.gguf /models/tiny.gguf\nCMD {json.dumps(['-m', '/models/tiny.gguf', *cmd])}\n"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run-it")
    store = open_store(root / "home")
    build_image(store, root, tiny_chat_gguf(root), chat_packerfile(', "-n", "8", "-t", "1"'), "chat:1")
    build_image(store, root, tiny_embedding_gguf(root), _packerfile([]), "embed:1")
    endless = ["-c", "8192", "-n", "-1", "--temp", "0", "-t", "1", "--chat-template", CHAT_TEMPLATE]
    build_image(store, root, _endless_gguf(root), _packerfile(endless), "endless:1")
    broken = make_gguf(root / "broken.gguf", n_layers=2, extra_kv={"llama.block_count": 3})
    build_image(store, root, broken, _packerfile([]), "broken:1")
    return root / "home"


@pytest.fixture(autouse=True)
def _nothing_left(home: Path) -> Iterator[None]:
    """A test ends with no server of this store running; whatever a failing one left is killed by pid."""
    yield
    left = processes_with(str(home))
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == [], "a server outlived ggufpack run"


def _ask(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``ggufpack run ARGS``, stdin from ``stdin`` (a pipe) or /dev/null."""
    return subprocess.run([sys.executable, "-m", "ggufpack", "run", *args], env=cli_env(home), text=True,
                          capture_output=True, timeout=120, input=stdin,
                          stdin=subprocess.DEVNULL if stdin is None else None)


@pytest.mark.slow
def test_one_shot_answers_on_stdout_only_and_stops_its_server(home: Path) -> None:
    result = _ask(home, "chat:1", "hello there", *GREEDY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and result.stdout.endswith("\n")
    assert result.stderr == ""  # the server's log goes nowhere unless asked (--debug) or it fails
    assert processes_with(str(home)) == []
    again = _ask(home, "chat:1", "hello there", *GREEDY)
    assert again.stdout == result.stdout  # greedy: the same answer, so it is the model's answer to the prompt


@pytest.mark.slow
def test_one_shot_reads_the_prompt_from_stdin(home: Path) -> None:
    asked = _ask(home, "chat:1", "hello there", *GREEDY).stdout
    dash = _ask(home, "chat:1", "-", *GREEDY, stdin="hello there\n")
    piped = _ask(home, "chat:1", *GREEDY, stdin="hello there\n")  # no PROMPT, stdin a pipe: like ollama run
    assert (dash.returncode, dash.stdout) == (0, asked), dash.stderr
    assert (piped.returncode, piped.stdout) == (0, asked), piped.stderr


@pytest.mark.slow
def test_one_shot_of_an_embedding_model_prints_its_vector(home: Path) -> None:
    result = _ask(home, "embed:1", "a tiny test")
    assert result.returncode == 0, result.stderr
    vector = json.loads(result.stdout)
    assert len(vector) == 64 and all(isinstance(x, float) for x in vector)


def test_usage_errors_start_no_server(home: Path) -> None:
    cases = [
        (["-it", "embed:1"], "embed:1 is an embedding model: it has no chat"),
        (["-d", "chat:1", "hello"], "--detach serves in the background"),
        (["-it", "chat:1", "hello"], "either a PROMPT (answered once) or -i/-it"),
        (["chat:1", "-"], "the prompt read from stdin is empty"),
    ]
    for args, message in cases:
        result = _ask(home, *args, stdin="")
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.slow
def test_chat_from_a_pipe_keeps_the_conversation_and_clear_forgets_it(home: Path) -> None:
    """Stdout holds the answers only: with greedy decoding, ``hello`` after ``/clear`` is answered as in a
    one-shot run, and the second ``hello`` of one conversation otherwise (it sees the first exchange)."""
    alone = _ask(home, "chat:1", "hello", *GREEDY).stdout
    cleared = _ask(home, "-it", "chat:1", *GREEDY, stdin="hello\n/?\n/clear\nhello\n/bye\nnever read\n")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout == alone * 2
    assert "/clear" in cleared.stderr and "Cleared the conversation." in cleared.stderr
    kept = _ask(home, "-it", "chat:1", *GREEDY, stdin="hello\nhello\n")  # EOF ends the chat
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith(alone) and kept.stdout != alone * 2


@pytest.mark.slow
def test_a_refused_message_is_dropped_and_the_chat_goes_on(home: Path) -> None:
    """A message past the context (256 tokens in CMD) fails with the server's reason; the next one is answered."""
    alone = _ask(home, "chat:1", "hello", *GREEDY).stdout
    result = _ask(home, "-it", "chat:1", *GREEDY, stdin="word " * 300 + "\nhello\n")
    assert result.returncode == 0, result.stderr
    assert "exceed context window" in result.stderr and "the message was dropped" in result.stderr
    assert result.stdout.endswith(alone)  # answered as if the refused message had never been sent


class _Terminal:
    """``ggufpack run ARGS`` on a pseudo-terminal: what it prints, and keys typed at it."""

    def __init__(self, home: Path, *args: str) -> None:
        env = cli_env(home)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: ggufpack on the terminal (never back into pytest)
            try:
                os.execve(sys.executable, [sys.executable, "-m", "ggufpack", "run", *args], env)
            finally:
                os._exit(127)
        self.seen = b""

    def until(self, marker: bytes, timeout: float = 60) -> bytes:
        """Everything up to and including ``marker``."""
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {marker!r} in {timeout} s; the terminal shows {self.seen[-400:]!r}")
            try:
                self.seen += os.read(self.fd, 4096)
            except OSError:  # the child closed the terminal
                raise AssertionError(f"no {marker!r} before the end; the terminal showed {self.seen[-400:]!r}") \
                    from None
        end = self.seen.index(marker) + len(marker)
        shown, self.seen = self.seen[:end], self.seen[end:]
        return shown

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def status(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):  # keep the terminal drained
                if select.select([self.fd], [], [], 0.1)[0]:
                    self.seen += os.read(self.fd, 4096)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("ggufpack run did not exit")


@pytest.mark.slow
def test_chat_on_a_terminal_two_turns_clear_help_bye(home: Path) -> None:
    term = _Terminal(home, "-it", "chat:1", *GREEDY)
    assert b"Chatting with chat:1. /? for help" in term.until(b">>> ")
    term.type(b"hello\r")
    first = term.until(b">>> ")
    term.type(b"how are you?\r")
    second = term.until(b">>> ")
    assert first.startswith(b"hello\r\n") and second.startswith(b"how are you?\r\n")
    assert len(first) > len(b"hello\r\n\r\n>>> ")  # an answer came between the message and the next prompt
    term.type(b"/?\r")
    assert b"/clear" in term.until(b">>> ")
    term.type(b"/clear\r")
    assert b"Cleared the conversation." in term.until(b">>> ")
    term.type(b"hello\r")
    assert term.until(b">>> ") == first  # greedy, and the first turn's history is gone
    term.type(b"/bye\r")
    assert term.status() == 0


@pytest.mark.slow
def test_ctrl_c_stops_the_reply_not_the_chat_and_ctrl_d_leaves(home: Path) -> None:
    term = _Terminal(home, "-it", "endless:1")
    term.until(b">>> ")
    term.type(b"hello\r")
    term.until(b"!!!!")  # the endless reply is under way
    term.type(b"\x03")
    assert term.until(b">>> ").endswith(b"^C\r\n>>> ")
    term.type(b"\x03")  # at the prompt: a hint, and the chat goes on
    assert b"Use Ctrl-D or /bye to leave." in term.until(b">>> ")
    term.type(b"again\r")
    term.until(b"!!!!")  # the server answers again: the interrupted generation let go of the model
    term.type(b"\x03")
    term.until(b">>> ")
    term.type(b"\x04")
    assert term.status() == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_one_shot_answer_stops_the_server(home: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "ggufpack", "run", "endless:1", "hello"], env=cli_env(home),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.read(4) == b"!!!!"  # mid-answer
        assert processes_with(str(home))
        proc.send_signal(sig)
        status = proc.wait(30)
    finally:
        proc.kill()
        proc.communicate()
    assert status == 128 + sig
    assert processes_with(str(home)) == []


@pytest.mark.slow
def test_a_reader_that_stops_reading_ends_the_answer_quietly(home: Path) -> None:
    """``ggufpack run REF PROMPT | head -c 4``: a broken pipe ends run with 141 (as SIGPIPE would), no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "ggufpack", "run", "endless:1", "hello"], env=cli_env(home),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(4) == b"!!!!"
    proc.stdout.close()
    status = proc.wait(30)
    assert status == 128 + signal.SIGPIPE and proc.stderr.read() == b""
    assert processes_with(str(home)) == []


@pytest.mark.slow
def test_a_failing_server_is_reported_with_its_log_and_exit_1(home: Path) -> None:
    result = _ask(home, "broken:1", "hello")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: the llama-cpp-python server exited with status 1 before it answered")
    assert "what the server said went wrong:\n  llama_model_load: error loading model" in result.stderr
    assert "ggufpack/cli" not in result.stderr  # no traceback of ours, only the server's own last lines
    log = Path(result.stderr.split("(log: ", 1)[1].split(")", 1)[0])
    try:
        assert "blk.2" in log.read_text()  # kept, as the message says, with the whole story
    finally:
        log.unlink()
    debug = run_cli(["--debug", "run", "broken:1", "hello"], home)
    assert debug.code == 1 and "llama_model_loader: - kv" in debug.err  # the server's output, live


@pytest.mark.slow
def test_llama_server_runtime_answers_chats_and_embeds(home: Path, tmp_path: Path) -> None:
    """The same client against a real llama-server (the CPU build of the backend tests): its event stream,
    its embeddings (``--embedding`` added, as llama-server serves them only when told)."""
    from .helpers.llamacpp_build import install_into

    own = tmp_path / "home"
    shutil.copytree(home, own, symlinks=True, ignore=shutil.ignore_patterns("state"))
    install_into(own)
    server = ["--runtime", "llama-server", "--backend", "llama.cpp-cpu"]
    answer = _ask(own, "chat:1", "hello there", *server, "--", "-t", "1")
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
    assert answer.stderr == ""
    chat = _ask(own, "-it", "chat:1", *server, stdin="hello\n/clear\nhello again\n/bye\n")
    assert chat.returncode == 0 and chat.stdout.count("\n") >= 2, chat.stderr
    vector = _ask(own, "embed:1", "a tiny test", *server)
    assert vector.returncode == 0, vector.stderr
    assert len(json.loads(vector.stdout)) == 64
    assert processes_with(str(own)) == []
