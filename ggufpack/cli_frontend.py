"""``ggufpack frontend serve``: the BuildKit frontend (the frontend image's entrypoint)."""

from __future__ import annotations

import argparse


def cmd_frontend_serve(args: argparse.Namespace) -> int:
    from .frontend.serve import main

    return main()


def register(sub: argparse._SubParsersAction) -> None:
    frontend = sub.add_parser("frontend", help="the BuildKit frontend (run by BuildKit, from the frontend image)")
    actions = frontend.add_subparsers(dest="frontend_command", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="speak BuildKit's frontend gateway protocol on stdin/stdout")
    serve.set_defaults(func=cmd_frontend_serve)
