"""The packaged system prompt, put into the chat template so that every chat sees it.

llama-server lost ``--system-prompt-file`` (it is a llama-cli option now) and llama-cpp-python's
server never had one, so the prompt travels in the one place both honour: the Jinja chat template.
:func:`with_system_prompt` prepends a template prologue that adds a system message when the
request has none; a request's own system message wins. The prologue uses only what both template
engines understand (llama.cpp's ``common/jinja`` and Python's jinja2): ``set``, ``if``, list
concatenation and string literals with the escapes ``\\\\ \\" \\n \\r \\t``.
"""

from __future__ import annotations

from ..errors import GGUFPackError

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_jinja(template: str) -> bool:
    """A Jinja template, as opposed to the name of a built-in one (``chatml``, ``llama3``)."""
    return "{{" in template or "{%" in template


def jinja_string(text: str) -> str:
    """``text`` as a double-quoted Jinja string literal."""
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in text) + '"'


def with_system_prompt(template: str, prompt: str) -> str:
    """``template`` rendering ``prompt`` as the system message of chats that bring none."""
    if not is_jinja(template):
        raise GGUFPackError(
            f"the image's system prompt needs a Jinja chat template, but the chat template is the built-in "
            f"name {template!r}; put the template's Jinja text in CMD (--chat-template-file)"
        )
    prologue = (
        '{%- if not messages or messages[0]["role"] != "system" -%}'
        '{%- set messages = [{"role": "system", "content": ' + jinja_string(prompt) + '}] + messages -%}'
        "{%- endif %}"
    )
    return prologue + template


def prompt_text(data: bytes, path: str) -> str:
    """A system prompt file's text, as llama.cpp reads it (one trailing newline dropped)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise GGUFPackError(f"the system prompt file {path} is not UTF-8 text") from None
    return text.removesuffix("\n")
