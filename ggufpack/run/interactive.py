"""``ggufpack run REF PROMPT`` (answer once) and ``ggufpack run -it REF`` (chat in the terminal), as
``ollama run`` and ``docker model run`` do.

Both start the image's server as ``run`` does (same runtime choice, CMD and extra arguments) on a
free loopback port, its output in a temporary log (on stderr with ``--debug``), wait until it
answers, and then talk to it through its OpenAI-compatible API (:mod:`.client`): the server applies
the image's chat template and system prompt, so the conversation here is plain user/assistant
turns. Stdout carries the answer only. The server runs in a session of its own, so a Ctrl-C on the
terminal reaches ggufpack alone: in a chat it stops the reply under way, elsewhere it ends ggufpack,
which always stops the server (by its PID) before it returns; SIGTERM and SIGHUP do the same.

An embedding model (the model's GGUF says so, or CMD has ``--embedding``) answers a prompt with its
embedding vector as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TextIO

from ..errors import GGUFPackError, UsageError, printable
from ..gguf_info import read_header_file
from ..gguf_info.facts import usage
from .client import Client, ServerLost
from .cmdline import server_options
from .image import RunnableImage
from .runtimes import Launch, plan_launch
from .server import ServerExited, exit_status, start, stop, tail, wait_healthy

LOOPBACK = "127.0.0.1"
_PROMPT = ">>> "
_MORE = "... "
_QUOTES = '"""'
_EMBEDDING = "--embedding"
_TERMINATING = (signal.SIGTERM, signal.SIGHUP)
_STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: log lines that say why a server failed (llama.cpp's ``error loading model``, ``failed to ...``)
_TELLING = re.compile(r"error\b|\bfail(?:ed|s|ure)?\b", re.IGNORECASE)
_METADATA_LINE = "llama_model_loader: - "
_MAX_TELLING = 8
#: how long a server that dropped a connection is given to exit, before it is taken as alive
_DYING_S = 2.0
HELP = """Available commands:
  /clear    forget the conversation so far (the image's system prompt stays)
  /bye      leave (Ctrl-D does too)
  /?        show this help
Begin and end a message with \"\"\" to write several lines.
Ctrl-C stops a reply under way."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind (stopping the server on the way) and exit 128+N."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def wants_client(prompt: str | None, interactive: bool, stdin: TextIO | None = None) -> bool:
    """Does this ``run`` talk to its server (a prompt, ``-i``/``-t``, or a prompt piped or redirected
    into stdin), rather than serve until stopped?"""
    return interactive or prompt is not None or stdin_has_prompt(stdin or sys.stdin)


def stdin_has_prompt(stdin: TextIO) -> bool:
    """Is stdin a pipe or a regular file (``echo hi | ggufpack run REF``, ``run REF < question.txt``)?
    Not a terminal, and not ``/dev/null`` or another device: then ``run REF`` serves, as ever."""
    try:
        mode = os.fstat(stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def read_prompt(prompt: str | None, stdin: TextIO) -> str:
    """The prompt: the argument, or all of stdin when it is ``-`` or absent."""
    if prompt is not None and prompt != "-":
        text = prompt
    else:
        if stdin.isatty():
            raise UsageError("the prompt is - but stdin is a terminal: pipe the prompt in, or give it as an argument")
        text = stdin.read()
    if not text.strip():
        raise UsageError("the prompt is empty" if prompt not in (None, "-") else "the prompt read from stdin is empty")
    return text.strip("\n")


# ------------------------------------------------------------------------------------ the server


@dataclass
class LocalServer:
    """A server started for one conversation, and how to reach it."""

    launch: Launch
    proc: subprocess.Popen[bytes]
    log: Path | None
    client: Client
    model: str
    embedding: bool

    def lost(self, exc: ServerLost) -> GGUFPackError:
        """What to say when the connection broke: the server's exit and its last log lines, if it died."""
        try:
            status = self.proc.wait(_DYING_S)  # a server that closed the connection may be dying
        except subprocess.TimeoutExpired:
            return exc
        output = f":\n{tail(self.log)}\n(log: {self.log})" if self.log is not None else " (its output is above)"
        return GGUFPackError(f"the {self.launch.runtime} server exited with status {exit_status(status)} while "
                             f"answering{output}")

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size if self.log is not None else 0
        except OSError:
            return 0


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServedAs:
    """What the client must know of the image's server: does it embed rather than chat, its API key."""

    embedding: bool
    api_key: str | None
    #: CMD or the extra arguments say ``--embedding`` (llama-server serves ``/v1/embeddings`` only then)
    flagged: bool = False


def served_as(image: RunnableImage, extra: Sequence[str]) -> ServedAs:
    """An embedding model when CMD (or ``extra``) says ``--embedding`` or the model's GGUF is an encoder or
    pools its output (as the ``gguf.model.usage`` label says ``embedding``); the first ``--api-key``."""
    options = server_options(image, lambda path: path, extra)
    keys = [o.values[0] for o in options if o.canonical == "--api-key" and o.values]
    api_key = keys[-1].split(",")[0] if keys else None
    if any(o.canonical == _EMBEDDING for o in options):
        return ServedAs(True, api_key, flagged=True)
    models = [o.values[0] for o in options if o.canonical == "--model" and o.values]
    header = read_header_file(image.store.file_path(image.digest_of(models[-1]))) if models else None
    return ServedAs(header is not None and usage(header) == "embedding", api_key)


def log_text(log: Path | None, offset: int = 0) -> str:
    """What the server logged from byte ``offset`` on ("" without a log)."""
    if log is None:
        return ""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def telling_lines(text: str, shown: str = "") -> list[str]:
    """The lines of a server's log ``text`` that say what went wrong and that ``shown`` (the tail already
    quoted) lacks."""
    return [line.strip() for line in text.splitlines()
            if _TELLING.search(line) and not line.startswith(_METADATA_LINE) and line not in shown]


def _explained(exc: ServerExited, log: Path | None) -> ServerExited:
    """``exc`` (its message quotes the log's tail) with the log's telling lines last, where the eye lands."""
    lines = telling_lines(log_text(log), str(exc))[:_MAX_TELLING]
    if not lines:
        return exc
    listed = "\n".join(f"  {line}" for line in lines)
    return ServerExited(f"{exc}\nwhat the server said went wrong:\n{listed}", exc.status)


@contextlib.contextmanager
def _signals(handler: Callable[[int, FrameType | None], None], signals: Sequence[int]) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def _stop_surely(proc: subprocess.Popen[bytes], launch: Launch) -> None:
    """:func:`server.stop`, with any signal meanwhile (an impatient second Ctrl-C) killing the server at once
    rather than leaving it behind."""
    def kill(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    with _signals(kill, _STOPPING):
        stop(proc, launch)


def _temporary_log() -> Path:
    fd, name = tempfile.mkstemp(prefix="ggufpack-run-", suffix=".log")
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def local_server(image: RunnableImage, *, runtime: str = "auto", backend: str | None = None,
                 docker_image: str | None = None, extra: Sequence[str] = (), timeout: float,
                 keep_fds: tuple[int, ...] = (), debug: bool = False,
                 served: ServedAs | None = None) -> Iterator[LocalServer]:
    """The image's server on a free loopback port, running until the block ends (however it ends).

    Its output goes to a temporary log, kept and quoted when the server fails, or to stderr with
    ``debug``. SIGTERM and SIGHUP raise :class:`Terminated` inside the block.
    """
    served = served or served_as(image, extra)
    extra = [*extra, _EMBEDDING] if served.embedding and not served.flagged else list(extra)
    port = free_loopback_port()
    launch = plan_launch(image, runtime, host=LOOPBACK, port=port, extra=extra, backend=backend,
                         docker_image=docker_image)
    launch = replace(launch, keep_fds=keep_fds)
    for note in launch.notes:  # as ``run`` says them: on stderr, never in the answer
        print(f"note: {note}", file=sys.stderr)
    log = None if debug else _temporary_log()
    keep_log = False
    proc: subprocess.Popen[bytes] | None = None
    with _signals(_terminate, _TERMINATING):
        try:
            proc = start(launch, log)
            try:
                wait_healthy(proc, launch, timeout, log)
            except ServerExited as exc:
                raise _explained(exc, log) from None
            yield LocalServer(launch, proc, log, Client(LOOPBACK, port, served.api_key), image.name,
                              served.embedding)
        except GGUFPackError as exc:
            keep_log = log is not None and str(log) in str(exc)  # the message points to it
            raise
        finally:
            if proc is not None:
                _stop_surely(proc, launch)
            if log is not None and not keep_log:
                log.unlink(missing_ok=True)


# ------------------------------------------------------------------------------- the conversation


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def answer_once(server: LocalServer, prompt: str) -> None:
    """Print the answer to ``prompt`` as it comes, then a newline (an embedding model: its vector, as JSON)."""
    try:
        if server.embedding:
            print(json.dumps(server.client.embed(server.model, prompt)), flush=True)
            return
        reply = server.client.chat(server.model, [{"role": "user", "content": prompt}], _write)
    except ServerLost as exc:
        raise server.lost(exc) from None
    _write("" if reply.endswith("\n") else "\n")


class _Lines:
    """Lines typed (with readline's editing and history on a terminal) or piped in; None at EOF."""

    def __init__(self, stdin: TextIO) -> None:
        self.stdin = stdin
        self.tty = stdin.isatty()
        if self.tty and sys.stdout.isatty():
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (input() edits lines and keeps history once it is loaded)

    def read(self, prompt: str) -> str | None:
        if not self.tty:
            line = self.stdin.readline()
            return line.rstrip("\n") if line else None
        try:
            if sys.stdout.isatty():
                return input(prompt)
            sys.stderr.write(prompt)  # stdout is the answers' only, even here
            sys.stderr.flush()
            return input()
        except EOFError:
            sys.stderr.write("\n")
            return None

    def message(self, first: str) -> str | None:
        """``first``, or, when it opens with three double quotes, every line up to the closing ones."""
        text = first.strip()
        if not text.startswith(_QUOTES):
            return first
        text, lines = text[len(_QUOTES):], []
        while not text.rstrip().endswith(_QUOTES):
            lines.append(text)
            more = self.read(_MORE)
            if more is None:
                return None
            text = more
        lines.append(text.rstrip()[:-len(_QUOTES)])
        return "\n".join(lines).strip("\n")


def _say(text: str) -> None:
    """A word from the chat itself (help, notices): on stderr, so that stdout holds the answers only."""
    print(text, file=sys.stderr, flush=True)


def chat(server: LocalServer, stdin: TextIO | None = None) -> int:
    """The read-eval loop: each message is answered with the conversation so far; ``/clear`` forgets it,
    ``/bye`` or EOF ends the loop, Ctrl-C stops a reply (or, at the prompt, says how to leave)."""
    lines = _Lines(stdin or sys.stdin)
    history: list[dict[str, str]] = []
    if lines.tty:
        _say(f"Chatting with {server.model}. /? for help, /bye or Ctrl-D to leave.")
    while True:
        try:
            line = lines.read(_PROMPT)
            text = lines.message(line) if line is not None else None
        except KeyboardInterrupt:
            _say("\nUse Ctrl-D or /bye to leave.")
            continue
        if text is None:
            return 0
        if not text.strip():
            continue
        command = text.split()[0]
        if command in ("/bye", "/exit", "/quit"):
            return 0
        if command == "/clear":
            history.clear()
            _say("Cleared the conversation.")
            continue
        if command in ("/?", "/help"):
            _say(HELP)
            continue
        if command.startswith("/") and "\n" not in text:
            _say(f"Unknown command {command!r}; /? lists them.")
            continue
        history.append({"role": "user", "content": text})
        mark = server.log_size()
        try:
            reply = server.client.chat(server.model, history, _write)
        except KeyboardInterrupt:
            history.pop()  # an unfinished turn is forgotten: the next one starts from the last full answer
            _write("\n")
            continue
        except GGUFPackError as exc:
            failure = server.lost(exc) if isinstance(exc, ServerLost) else exc
            if server.proc.poll() is not None:
                raise failure from None
            # a refusal (a conversation past the context, say) while the server runs on: the chat goes on
            history.pop()
            said = telling_lines(log_text(server.log, mark))[-1:]  # the last word: the exception's message
            _say(f"\nerror: {printable(str(exc))}{f' ({said[0]})' if said else ''}; the message was dropped")
            continue
        history.append({"role": "assistant", "content": reply})
        _write("" if reply.endswith("\n") else "\n")


def talk(image: RunnableImage, *, prompt: str | None, interactive: bool, runtime: str = "auto",
         backend: str | None = None, docker_image: str | None = None, extra: Sequence[str] = (),
         timeout: float, keep_fds: tuple[int, ...] = (), debug: bool = False, stdin: TextIO | None = None) -> int:
    """``run REF PROMPT`` (``prompt``; ``-`` or None: read from stdin) or ``run -it REF`` (``interactive``):
    start the image's server, answer, stop it; the exit status."""
    stdin = stdin or sys.stdin
    if interactive and prompt is not None:
        raise UsageError("give either a PROMPT (answered once) or -i/-it (a chat), not both")
    served = served_as(image, extra)
    if interactive and served.embedding:
        raise UsageError(f"{image.name} is an embedding model: it has no chat; embed a text with "
                         f"ggufpack run {image.name} TEXT")
    text = None if interactive else read_prompt(prompt, stdin)
    try:
        with local_server(image, runtime=runtime, backend=backend, docker_image=docker_image, extra=extra,
                          timeout=timeout, keep_fds=keep_fds, debug=debug, served=served) as server:
            if text is None:
                return chat(server, stdin)
            answer_once(server, text)
            return 0
    except Terminated as exc:
        return 128 + exc.signum
    except BrokenPipeError:  # ``run REF PROMPT | head``: the reader has had enough
        _silence_stdout()
        return 128 + signal.SIGPIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's last flush at exit finds no broken pipe to complain of."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
