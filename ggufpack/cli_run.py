"""``ggufpack run``, ``ps``, ``stop``: serve a model image behind an OpenAI-compatible API."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .cli_common import add_progress_options, add_registry_options, client_for, progress_for, store_for

if TYPE_CHECKING:
    from .run.image import RunnableImage
    from .store import Store

DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_S = 300.0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _open(args: argparse.Namespace, store: Store) -> RunnableImage:
    """The image, pulled first when it is a registry ref the store lacks."""
    from .oci.platform import DEFAULT_PLATFORM
    from .refs import parse_reference
    from .registry.pull import pull_image
    from .run.image import open_image

    platform = args.platform or DEFAULT_PLATFORM

    def fetch(name: str) -> None:
        ref = parse_reference(name)
        pull_image(store, ref, client_for(args, ref.registry or ""), platform=platform, progress=progress_for(args))

    return open_image(store, args.image, platform, fetch)


def cmd_run(args: argparse.Namespace) -> int:
    from .run import detached
    from .run.runtimes import plan_launch
    from .run.server import check_port, serve, serve_detached

    store = store_for(args)
    image = _open(args, store)
    launch = plan_launch(image, args.runtime, host=args.host, port=args.port, extra=list(args.server_args),
                         backend=args.backend, docker_image=args.docker_image, dry_run=args.dry_run)
    for note in launch.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        print(shlex.join(launch.argv))
        return 0
    check_port(args.host, args.port)
    if not args.detach:
        def ready() -> None:
            print(f"serving {args.image} ({launch.runtime}) at {launch.url}/v1; Ctrl-C stops it", flush=True)

        return serve(launch, args.timeout, ready)
    run_id = detached.new_id()
    log = detached.prepare_log(store.root, run_id)
    launch = detached.mark(launch, run_id)

    def remember(proc: subprocess.Popen[bytes]) -> None:
        record = detached.record_for(run_id, proc.pid, launch, ref=args.image, image=image.digest)
        if record is not None:
            detached.save(store.root, record)

    serve_detached(launch, args.timeout, log, remember, lambda: detached.forget_record(store.root, run_id))
    print(run_id)
    print(f"serving {args.image} ({launch.runtime}) at {launch.url}/v1; stop it with: ggufpack stop {run_id}",
          file=sys.stderr)
    return 0


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def cmd_ps(args: argparse.Namespace) -> int:
    from .run.detached import live
    from .terminal import human_age, render_table

    home = store_for(args).root
    records = live(home, _warn)
    if args.format == "json":
        print(json.dumps([r.to_json(home) for r in records], indent=2))
        return 0
    rows = [["ID", "IMAGE", "RUNTIME", "URL", "PID", "CREATED", "LOG"]]
    rows += [[r.id, r.ref, r.runtime, r.url, str(r.pid), human_age(r.created), str(r.log(home))] for r in records]
    print(render_table(rows))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from .run.detached import matching, stop

    home = store_for(args).root
    chosen: dict[str, Any] = {}
    for target in args.targets:
        chosen.update({r.id: r for r in matching(home, target, _warn)})
    for record in chosen.values():
        stop(home, record)
        print(record.id)
    return 0


def _split_server_args(parser: argparse.ArgumentParser) -> None:
    """Everything after the first ``--`` goes to the server, untouched.

    argparse cannot put words after ``--`` into a list that follows a positional argument while
    still accepting options after that positional (``run REF --dry-run -- -c 512``), so the words
    are taken off before it parses.
    """
    parse = parser.parse_known_args

    def parse_known_args(  # type: ignore[no-untyped-def]
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ):
        words = list(sys.argv[1:] if args is None else args)
        server_args = words[words.index("--") + 1:] if "--" in words else []
        words = words[:words.index("--")] if "--" in words else words
        parsed, rest = parse(words, namespace)
        parsed.server_args = server_args
        return parsed, rest

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``run``, ``ps`` and ``stop`` to the ``ggufpack`` parser."""
    from .run import RUNTIMES

    run = sub.add_parser(
        "run", help="serve an image with llama.cpp behind an OpenAI-compatible API",
        usage="ggufpack run [options] REF [-- SERVER-ARGS...]",
        description="Start a llama.cpp server on the image's model files in the store, with the image's CMD, and "
                    "wait until it answers. Words after -- are extra llama-server arguments.",
    )
    run.add_argument("image", metavar="REF", help="image ref or ID (a registry ref is pulled when missing)")
    run.add_argument("--runtime", choices=RUNTIMES, default="auto",
                     help="auto (default): llama-cpp-python's server when installed, else an installed llama-server")
    run.add_argument("--backend", help="llama.cpp backend whose llama-server to run (ggufpack backends list)")
    run.add_argument("-p", "--port", type=_port, default=DEFAULT_PORT, help=f"port to listen on ({DEFAULT_PORT})")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    run.add_argument("--dry-run", action="store_true", help="print the command (shell-quoted) and exit")
    run.add_argument("-d", "--detach", action="store_true",
                     help="return once the server answers; manage it with ggufpack ps / stop")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                     help=f"seconds to wait for the server to answer ({DEFAULT_TIMEOUT_S:g})")
    run.add_argument("--docker-image", help="server image of the docker runtime (default: llama.cpp's)")
    run.add_argument("--platform", help="platform to pull for a registry ref (default: linux/amd64)")
    add_registry_options(run)
    add_progress_options(run, "print no pull progress")
    run.set_defaults(func=cmd_run, server_args=[])
    _split_server_args(run)

    ps = sub.add_parser("ps", help="list detached servers (ggufpack run --detach)")
    ps.add_argument("--format", choices=["table", "json"], default="table")
    ps.set_defaults(func=cmd_ps)

    stop = sub.add_parser("stop", help="stop detached servers")
    stop.add_argument("targets", nargs="+", metavar="ID|REF|all", help="server ID (prefix), image ref or ID, or all")
    stop.set_defaults(func=cmd_stop)
