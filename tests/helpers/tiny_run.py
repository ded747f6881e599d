"""Images and processes for the ``ggufpack run`` tests: converted tiny models in built images, free
ports, and finding a test's server processes by a marker in their command line (no psutil)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ggufpack.convert import convert
from ggufpack.store import Store

from .builds import do_build, write_context
from .tiny_gpt2_bert import make_tiny_bert
from .tinymodels import make_tiny_llama

SYSTEM_PROMPT = 'You are Captain "Hook".\nSpeak like a pirate.\n'
#: a chat template with spaces, single and double quotes and a newline, as CMD carries it
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} \"ok\"\n{% endfor %}"
                 "<|assistant|>")


def tiny_chat_gguf(directory: Path) -> Path:
    """A tiny Llama converted to F16 by our converter (its tokenizer carries a chat template)."""
    out = directory / "tiny-chat.gguf"
    if not out.exists():
        convert(make_tiny_llama(directory / "hf-llama"), out, out_type="F16")
    return out


def tiny_embedding_gguf(directory: Path) -> Path:
    """A tiny BERT sentence embedder converted to F16."""
    out = directory / "tiny-bert.gguf"
    if not out.exists():
        convert(make_tiny_bert(directory / "hf-bert"), out, out_type="F16")
    return out


def chat_packerfile(cmd_extra: str = "") -> str:
    import json

    cmd = ["-m", "/models/tiny.gguf", "-c", "256", "--system-prompt-file", "/prompts/system.txt",
           "--chat-template", CHAT_TEMPLATE]
    return (
        "FROM scratch\n"
        "COPY tiny.gguf /models/tiny.gguf\n"
        f"CAT <<EOF /prompts/system.txt\n{SYSTEM_PROMPT}EOF\n"
        f"CMD {json.dumps(cmd)[:-1]}{cmd_extra}]\n"
    )


def build_image(store: Store, directory: Path, gguf: Path, packerfile: str, tag: str) -> str:
    """Build ``packerfile`` with ``gguf`` as ``tiny.gguf`` in its context; the image digest."""
    context = write_context(directory / f"ctx-{tag.replace(':', '-')}", packerfile, {"tiny.gguf": gguf.read_bytes()})
    return do_build(store, context, tags=(tag,)).descriptor.digest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
