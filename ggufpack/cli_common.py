"""What every command module of the CLI shares: the store, progress output and their options.

Command modules (:mod:`ggufpack.cli`, :mod:`ggufpack.cli_convert`, :mod:`ggufpack.cli_quantize`,
:mod:`ggufpack.cli_backends`) import the library lazily inside their handlers, so that
``ggufpack --help`` or ``ggufpack plan`` never load numpy, gguf or llama.cpp.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .progress import Progress
    from .registry.client import RegistryClient
    from .store import Store


def store_for(args: argparse.Namespace) -> Store:
    """The local store (``GGUFPACK_STORE`` or the default location)."""
    from .store import Store

    return Store.open_default()


def progress_for(args: argparse.Namespace) -> Progress:
    """Progress output as ``--progress``/``--quiet`` ask (see :func:`add_progress_options`)."""
    from .progress import Progress

    return Progress("quiet" if args.quiet else args.progress)


def add_progress_options(parser: argparse.ArgumentParser, quiet_help: str) -> None:
    parser.add_argument("--progress", choices=["auto", "tty", "plain", "quiet"], default="auto")
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet_help)


def add_registry_options(parser: argparse.ArgumentParser) -> None:
    """``--plain-http`` / ``--insecure`` for commands that talk to a registry."""
    parser.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS, to the registry")
    parser.add_argument("--insecure", action="store_true", help="skip TLS certificate verification")


def client_for(args: argparse.Namespace, registry: str) -> RegistryClient:
    """A client for ``registry`` with its saved settings and this command's flags."""
    from .api import registry_client

    return registry_client(registry, plain_http=args.plain_http, insecure=args.insecure)


def positive_int(text: str) -> int:
    """An argparse type for counts that must be at least 1 (``--jobs``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value
