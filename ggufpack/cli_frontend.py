"""``ggufpack frontend serve`` (the frontend image's entrypoint, run by BuildKit) and ``ggufpack frontend image``
(build that image offline with the local Docker daemon, tag it, optionally push it)."""

from __future__ import annotations

import argparse
import os
import sys

from .errors import GGUFPackError

#: what the frontend image runs: the real frontend (the probe used by the gateway tests is another module)
SERVE_ENTRY = "ggufpack frontend serve"


def cmd_frontend_serve(args: argparse.Namespace) -> int:
    from .frontend.serve import main

    return main()


def cmd_frontend_image(args: argparse.Namespace) -> int:
    import subprocess

    from .frontend.docker_build import docker_binary, docker_call
    from .frontend.image import ensure_frontend_image
    from .refs import parse_reference
    from .version import __version__

    tags = args.tag or [f"ggufpack-frontend:{__version__}"]
    for tag in tags:
        parse_reference(tag)
    docker = docker_binary()
    try:
        built, times = ensure_frontend_image([docker], entry_module=SERVE_ENTRY)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise GGUFPackError(f"building the frontend image failed: {exc}") from None
    for tag in tags:
        docker_call(docker, os.environ, "tag", built, tag)
        print(f"tagged {tag} ({built})", file=sys.stderr)
        if args.push:
            docker_call(docker, os.environ, "push", tag)
            print(f"pushed {tag}", file=sys.stderr)
    if times:
        print("  " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()), file=sys.stderr)
    print(built)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    frontend = sub.add_parser("frontend", help="the BuildKit frontend and its image")
    actions = frontend.add_subparsers(dest="frontend_command", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="speak BuildKit's frontend gateway protocol on stdin/stdout")
    serve.set_defaults(func=cmd_frontend_serve)
    image = actions.add_parser(
        "image", help="build the frontend image with the local Docker daemon, offline (a debootstrap base, "
                      "this machine's wheels and ggufpack sources), and tag it")
    image.add_argument("-t", "--tag", action="append", default=[],
                       help="tag it (repeatable; default ggufpack-frontend:<ggufpack version>)")
    image.add_argument("--push", action="store_true", help="docker push every -t (a registry the daemon reaches)")
    image.set_defaults(func=cmd_frontend_image)
