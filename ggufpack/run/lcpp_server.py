"""``python -m ggufpack.run.lcpp_server``: llama-cpp-python's OpenAI-compatible server, plus a chat
template given as text or file.

llama-cpp-python's own ``python -m llama_cpp.server`` takes a chat *format* name only; llama-server
takes a Jinja template (``--chat-template``), and an image's system prompt travels in one (see
:mod:`ggufpack.run.chat`). This launcher takes every option of llama-cpp-python's server plus
``--chat_template TEXT`` / ``--chat_template_file PATH``, builds the app, and renders chats with that
template, with the model's BOS/EOS tokens, exactly as llama-cpp-python renders a GGUF's own template.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from llama_cpp.server.cli import add_args_from_model
    from llama_cpp.server.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m ggufpack.run.lcpp_server", allow_abbrev=False,
                                     description="llama-cpp-python's server with a Jinja chat template")
    add_args_from_model(parser, Settings)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--chat_template", help="Jinja chat template text")
    group.add_argument("--chat_template_file", type=Path, help="file holding the Jinja chat template")
    return parser


def _use_template(template: str) -> None:
    """Render chats of the loaded model with ``template``."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.server import app as server_app

    proxy = server_app._llama_proxy
    assert proxy is not None, "create_app() loads the model"
    llama = proxy()
    eos, bos = llama.token_eos(), llama.token_bos()
    llama.chat_handler = Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    ).to_chat_handler()


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.cli import parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    args = _parser().parse_args(argv)
    template = args.chat_template
    if args.chat_template_file is not None:
        template = args.chat_template_file.read_text(encoding="utf-8")
    server_settings = parse_model_from_args(ServerSettings, args)
    app = create_app(server_settings=server_settings, model_settings=[parse_model_from_args(ModelSettings, args)])
    if template is not None:
        _use_template(template)
    uvicorn.run(app, host=server_settings.host, port=server_settings.port, ssl_keyfile=server_settings.ssl_keyfile,
                ssl_certfile=server_settings.ssl_certfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
