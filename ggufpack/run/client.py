"""A client of a server's OpenAI-compatible API, standard library only: chat completions streamed
as they come (server-sent events), embeddings.

Both servers ggufpack runs (llama-cpp-python's and llama-server) speak the same routes. A closed
connection stops the generation on either, so interrupting a reply (Ctrl-C) costs nothing more
than the tokens already made.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import GGUFPackError, printable

#: the most bytes of an error body quoted in a message
_MAX_ERROR_BYTES = 64 << 10
#: the longest line of an event stream accepted (one token's chunk is a few hundred bytes)
_MAX_LINE_BYTES = 16 << 20


class ServerLost(GGUFPackError):
    """The connection to the server broke (it may have exited): the caller says why."""


class Client:
    """Requests to the server at ``host:port`` (no proxy: it is a local server)."""

    def __init__(self, host: str, port: int, api_key: str | None = None) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key

    def _post(self, path: str, body: dict[str, Any]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send ``body`` as JSON; the open connection and its (200) response. A refusal is a
        :class:`GGUFPackError` quoting the server's own message."""
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=None)
        try:
            conn.request("POST", path, json.dumps(body).encode(), headers)
            response = conn.getresponse()
            if response.status != 200:
                raise GGUFPackError(f"the server refused {path} ({response.status} {response.reason}): "
                                    f"{_error_text(response.read(_MAX_ERROR_BYTES))}")
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ServerLost(f"the connection to the server broke ({_why(exc)})") from None
        except BaseException:
            conn.close()
            raise
        return conn, response

    def chat(self, model: str, messages: list[dict[str, str]], write: Callable[[str], None]) -> str:
        """Stream the reply to ``messages``, handing each piece of text to ``write`` as it arrives; the
        whole reply. An interruption (``KeyboardInterrupt``) closes the connection, which stops the
        generation; what ``write`` raises (a broken pipe) passes through as it is."""
        conn, response = self._post("/v1/chat/completions", {"model": model, "messages": messages, "stream": True})
        pieces: list[str] = []
        try:
            for data in _events(response):
                if data == "[DONE]":
                    break
                for piece in _delta_texts(data):
                    pieces.append(piece)
                    write(piece)
            else:  # both servers end a stream with [DONE]: without it, the server went away mid-reply
                raise ServerLost("the server closed the connection mid-reply")
        finally:
            conn.close()
        return "".join(pieces)

    def embed(self, model: str, text: str) -> list[float]:
        """The embedding vector of ``text``."""
        conn, response = self._post("/v1/embeddings", {"model": model, "input": text})
        try:
            answer = _json(response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise ServerLost(f"the connection to the server broke ({_why(exc)})") from None
        finally:
            conn.close()
        try:
            vector = answer["data"][0]["embedding"]
        except (KeyError, IndexError, TypeError):
            raise GGUFPackError(f"the server's embedding answer has no data[0].embedding: "
                                f"{printable(json.dumps(answer), 300)}") from None
        if not isinstance(vector, list):
            raise GGUFPackError("the server's embedding is not a list of numbers")
        return vector


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise GGUFPackError(f"the server answered something that is not JSON: {printable(repr(raw[:200]))}") from None


def _error_text(raw: bytes) -> str:
    """The message of an error body (OpenAI's ``{"error": {"message": ...}}``, FastAPI's ``{"detail": ...}``),
    else the body itself."""
    try:
        body = json.loads(raw)
    except ValueError:
        return printable(raw.decode("utf-8", "replace").strip() or "no message", 500)
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        message = error.get("message", error) if isinstance(error, dict) else error
        return printable(message if isinstance(message, str) else json.dumps(message), 500)
    return printable(json.dumps(body), 500)


def _events(response: http.client.HTTPResponse) -> Iterator[str]:
    """The ``data`` of each server-sent event (one ``data:`` line each, as both servers send them)."""
    while True:
        try:
            line = response.readline(_MAX_LINE_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise ServerLost(f"the connection to the server broke mid-reply ({_why(exc)})") from None
        if not line:
            return
        text = line.decode("utf-8", "replace").strip()
        if text.startswith("data:"):
            yield text[5:].strip()


def _delta_texts(data: str) -> list[str]:
    """The text pieces of one streamed chunk; an error event raises."""
    chunk = _json(data.encode())
    if not isinstance(chunk, dict):
        return []
    if "error" in chunk:
        raise GGUFPackError(f"the server stopped the reply: {_error_text(data.encode())}")
    out = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            out.append(content)
    return out
