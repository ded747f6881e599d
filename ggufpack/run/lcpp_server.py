"""``python -m ggufpack.run.lcpp_server``: llama-cpp-python's OpenAI-compatible server, made to serve
as llama-server does for the same CMD (the translation is :mod:`ggufpack.options.default_runtime`).

It takes every option of llama-cpp-python's server, plus what that server lacks:

- ``--chat_template TEXT`` / ``--chat_template_file PATH``: a Jinja template (an image's system prompt
  travels in one), rendered with the model's BOS/EOS tokens as llama-cpp-python renders a GGUF's own;
- llama.cpp context parameters its settings do not expose: ``--flash_attn_type auto|on|off``,
  ``--swa_full``, ``--pooling_type``, ``--n_seq_max``, ``--n_outputs_max``; they are set on the
  ``llama_context_params`` the ``Llama`` class builds, just before it creates the context (the one
  place its constructor leaves open), and batch sizes are taken as given (llama-cpp-python cuts the
  batch to the context, llama.cpp does that only for causal models);
- ``--lora_adapter PATH SCALE`` (repeatable): adapters applied to the context after loading, so the
  model stays memory-mapped (``lora_path`` turns mmap off) and any scale or number of them works;
- ``--embd_normalize N``: pooled embeddings normalised as llama-server does (2 = Euclidean);
- ``--request_defaults JSON``: fields added to a completion, chat or embedding request that lacks them
  (CMD's sampling options over llama-server's defaults; the model's name), before llama-cpp-python
  reads it;
- ``GET /health`` answering ``{"status": "ok"}``, without an API key, as llama-server's does (the
  model is loaded before the server listens).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

#: the routes whose JSON bodies get the request defaults
REQUEST_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/engines/copilot-codex/completions",
                           "/v1/embeddings"})

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _flag(text: str) -> bool:
    if text.lower() in ("true", "1", "on", "yes"):
        return True
    if text.lower() in ("false", "0", "off", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: write true or false")


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("a JSON object")
    return value


def _parser() -> argparse.ArgumentParser:
    from llama_cpp.server.cli import add_args_from_model
    from llama_cpp.server.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m ggufpack.run.lcpp_server", allow_abbrev=False,
                                     description="llama-cpp-python's server, serving as llama-server does")
    add_args_from_model(parser, Settings)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--chat_template", help="Jinja chat template text")
    group.add_argument("--chat_template_file", type=Path, help="file holding the Jinja chat template")
    ours = parser.add_argument_group("llama.cpp context parameters llama-cpp-python's settings lack")
    ours.add_argument("--flash_attn_type", choices=("auto", "on", "off"), default="auto")
    ours.add_argument("--swa_full", type=_flag, default=False, help="full-size sliding-window cache")
    ours.add_argument("--pooling_type", choices=("none", "mean", "cls", "last"),
                      help="embedding pooling (default: the model's)")
    ours.add_argument("--n_seq_max", type=int, default=1, help="sequences the context holds")
    ours.add_argument("--n_outputs_max", type=int, default=0, help="outputs in a micro-batch (0 = n_batch)")
    ours.add_argument("--lora_adapter", nargs=2, action="append", default=[], metavar=("PATH", "SCALE"))
    ours.add_argument("--embd_normalize", type=int, default=2, help="-1 none, 0 int16 range, 1 taxicab, 2 Euclidean, "
                      "p > 2 p-norm")
    ours.add_argument("--request_defaults", type=_json_object, default={},
                      help="JSON fields given to completion and chat requests that lack them")
    return parser


@contextlib.contextmanager
def context_parameters(**fields: Any) -> Iterator[None]:
    """While inside, every llama.cpp context llama-cpp-python creates gets ``fields`` set on its
    ``llama_context_params`` first (the ``Llama`` constructor fills them, then creates the context)."""
    from llama_cpp import _internals

    original = _internals.LlamaContext

    class Context(original):  # type: ignore[misc, valid-type]
        def __init__(self, *, model: Any, params: Any, verbose: bool = True) -> None:
            for name, value in fields.items():
                setattr(params, name, value)
            super().__init__(model=model, params=params, verbose=verbose)

    _internals.LlamaContext = Context
    try:
        yield
    finally:
        _internals.LlamaContext = original


def _context_fields(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    fields: dict[str, Any] = {
        "flash_attn_type": {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                            "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}[args.flash_attn_type],
        "swa_full": args.swa_full,
        "n_seq_max": args.n_seq_max,
        "kv_unified": args.n_seq_max > 1,
        "n_outputs_max": args.n_outputs_max,
        "n_batch": args.n_batch,
        "n_ubatch": min(args.n_ubatch, args.n_batch),
    }
    if args.pooling_type is not None:
        fields["pooling_type"] = getattr(llama_cpp, f"LLAMA_POOLING_TYPE_{args.pooling_type.upper()}")
    return fields


def _use_template(llama: Any, template: str) -> None:
    """Render chats of ``llama`` with ``template``."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos, bos = llama.token_eos(), llama.token_bos()
    llama.chat_handler = Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    ).to_chat_handler()


def _apply_loras(llama: Any, adapters: Sequence[tuple[str, str]]) -> None:
    """Load ``adapters`` (path, scale) and set them all on the context, as llama-server does."""
    import llama_cpp

    handles = []
    for path, _ in adapters:
        handle = llama_cpp.llama_adapter_lora_init(llama._model.model, path.encode())
        if not handle:
            raise SystemExit(f"error: llama.cpp could not load the LoRA adapter {path}")
        handles.append(handle)
        llama._stack.callback(llama_cpp.llama_adapter_lora_free, handle)
    array = (llama_cpp.llama_adapter_lora_p_ctypes * len(handles))(*handles)
    scales = (ctypes.c_float * len(handles))(*(float(scale) for _, scale in adapters))
    if llama_cpp.llama_set_adapters_lora(llama._ctx.ctx, array, len(handles), scales):
        raise SystemExit("error: llama.cpp could not apply the LoRA adapters")


def normalized(vector: Sequence[float], norm: int) -> list[float]:
    """llama.cpp's ``common_embd_normalize``: -1 none, 0 scaled to the int16 range, 2 Euclidean, any
    other p the p-norm (1 taxicab)."""
    if norm < 0:
        return list(vector)
    if norm == 0:
        total = max((abs(x) for x in vector), default=0.0) / 32760.0
    elif norm == 2:
        total = math.sqrt(sum(x * x for x in vector))
    else:
        total = sum(abs(x) ** norm for x in vector) ** (1.0 / norm)
    scale = 1.0 / total if total > 0 else 0.0
    return [x * scale for x in vector]


def _normalizing(llama: Any, norm: int) -> None:
    """Make ``llama.embed`` (which ``create_embedding`` calls) normalise pooled embeddings with ``norm``;
    per-token embeddings (pooling none) stay as they are, as in llama-server."""
    import llama_cpp

    if llama.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_NONE:
        return
    embed = llama.embed

    def normalizing_embed(input: str | list[str], normalize: bool = False, truncate: bool = True,
                          return_count: bool = False) -> Any:
        result = embed(input, normalize=False, truncate=truncate, return_count=return_count)
        vectors, count = result if return_count else (result, None)
        vectors = normalized(vectors, norm) if isinstance(input, str) else [normalized(v, norm) for v in vectors]
        return (vectors, count) if return_count else vectors

    llama.embed = normalizing_embed


def with_defaults(body: bytes, defaults: dict[str, Any]) -> bytes:
    """``body`` (a JSON request) with each field of ``defaults`` it lacks; an empty ``stop`` counts as
    missing (llama-server falls back to its ``-r`` words then); llama-server's own ``n_predict``
    stands for ``max_tokens``. Anything but a JSON object passes unchanged."""
    try:
        request = json.loads(body)
    except ValueError:
        return body
    if not isinstance(request, dict):
        return body
    if "max_tokens" not in request and "n_predict" in request:
        predict = request["n_predict"]
        request["max_tokens"] = None if isinstance(predict, int) and predict < 0 else predict
    for name, value in defaults.items():
        if name not in request or (name == "stop" and not request[name]):
            request[name] = value
    return json.dumps(request).encode()


class RequestDefaults:
    """ASGI middleware: completion and chat requests get :func:`with_defaults` before the app reads them."""

    def __init__(self, app: Callable[[_Scope, _Receive, _Send], Awaitable[None]], defaults: dict[str, Any]) -> None:
        self.app = app
        self.defaults = defaults

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in REQUEST_PATHS:
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
        body = with_defaults(b"".join(chunks), self.defaults)
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        request = {"type": "http.request", "body": body, "more_body": False}
        await self.app({**scope, "headers": headers}, _replay([request], receive), send)


def _replay(messages: list[MutableMapping[str, Any]], receive: _Receive) -> _Receive:
    pending = list(messages)

    async def replayed() -> MutableMapping[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replayed


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn
    from llama_cpp.server import app as server_app
    from llama_cpp.server.cli import parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    args = _parser().parse_args(argv)
    template = args.chat_template
    if args.chat_template_file is not None:
        template = args.chat_template_file.read_text(encoding="utf-8")
    server_settings = parse_model_from_args(ServerSettings, args)
    model_settings = parse_model_from_args(ModelSettings, args)
    with context_parameters(**_context_fields(args)):
        app = server_app.create_app(server_settings=server_settings, model_settings=[model_settings])
    proxy = server_app._llama_proxy
    assert proxy is not None, "create_app() loads the model"
    llama = proxy()
    if template is not None:
        _use_template(llama, template)
    if args.lora_adapter:
        _apply_loras(llama, args.lora_adapter)
    if model_settings.embedding:
        _normalizing(llama, args.embd_normalize)
    app.add_api_route("/health", lambda: {"status": "ok"}, methods=["GET"], include_in_schema=False)
    served = RequestDefaults(app, args.request_defaults) if args.request_defaults else app
    uvicorn.run(served, host=server_settings.host, port=server_settings.port, ssl_keyfile=server_settings.ssl_keyfile,
                ssl_certfile=server_settings.ssl_certfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
