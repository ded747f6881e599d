"""``ggufpack run``, ``ps``, ``stop``: serve a model image behind an OpenAI-compatible API."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .cli_common import add_progress_options, add_registry_options, progress_for, store_for
from .run import DEFAULT_PORT, DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    from .run.image import RunnableImage
    from .store import Store
    from .store.leases import Lease


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _open(args: argparse.Namespace, store: Store, lease_id: str | None = None) -> tuple[RunnableImage, Lease | None]:
    """The image, pulled first when it is a registry ref the store lacks; held by a lease unless
    this is a dry run (the lease keeps its files through ``remove`` and ``prune`` while it is served)."""
    from .api import registry_puller
    from .oci.platform import DEFAULT_PLATFORM
    from .run.image import hold_image, open_image

    platform = args.platform or DEFAULT_PLATFORM
    puller = registry_puller(store, progress_for(args), plain_http=args.plain_http, insecure=args.insecure)

    def fetch(name: str) -> None:
        puller(name, platform)

    if args.dry_run:
        return open_image(store, args.image, platform, fetch), None
    return hold_image(store, args.image, platform, fetch, lease_id)


def cmd_run(args: argparse.Namespace) -> int:
    from .run import detached

    if not args.dry_run and _talks(args):
        return _talk(args)
    if args.detach and not args.dry_run:
        return _run_detached(args)
    store = store_for(args)
    run_id = detached.new_id()
    image, lease = _open(args, store, run_id)
    try:
        return _serve(args, image, lease)
    finally:
        if lease is not None:
            lease.release()


def _serve(args: argparse.Namespace, image: RunnableImage, lease: Lease | None) -> int:
    from dataclasses import replace

    from .run.runtimes import plan_launch
    from .run.server import check_port, serve

    launch = plan_launch(image, args.runtime, host=args.host, port=args.port, extra=list(args.server_args),
                         backend=args.backend, docker_image=args.docker_image, dry_run=args.dry_run)
    for note in launch.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        print(shlex.join(launch.argv))
        return 0
    assert lease is not None and lease.fd is not None
    launch = replace(launch, keep_fds=(lease.fd,))
    check_port(args.host, args.port)

    def ready() -> None:
        print(f"serving {args.image} ({launch.runtime}) at {launch.url}/v1; Ctrl-C stops it", flush=True)

    return serve(launch, args.timeout, ready)


def _talks(args: argparse.Namespace) -> bool:
    """Does this ``run`` answer a prompt or chat (:func:`ggufpack.run.interactive.wants_client`)?"""
    from .errors import UsageError
    from .run.interactive import wants_client

    if args.detach:
        if args.prompt is not None or args.interactive or args.tty:
            raise UsageError("--detach serves in the background, a PROMPT or -i/-it talks to a server of its own: "
                             "give one or the other")
        return False
    return wants_client(args.prompt, args.interactive or args.tty)


def _talk(args: argparse.Namespace) -> int:
    """``run REF PROMPT`` / ``run -it REF``: :func:`ggufpack.run.interactive.talk` on a server of its own."""
    from .run.interactive import talk

    image, lease = _open(args, store_for(args))
    assert lease is not None and lease.fd is not None
    try:
        return talk(image, prompt=args.prompt, interactive=args.interactive or args.tty, runtime=args.runtime,
                    backend=args.backend, docker_image=args.docker_image, extra=list(args.server_args),
                    timeout=args.timeout, keep_fds=(lease.fd,), debug=getattr(args, "debug", False))
    finally:
        lease.release()


def _run_detached(args: argparse.Namespace) -> int:
    """``run --detach``: the library's :func:`ggufpack.api.run`, which returns once the server answers."""
    from .api import run

    server = run(args.image, port=args.port, host=args.host, server_args=args.server_args, runtime=args.runtime,
                 backend=args.backend, docker_image=args.docker_image, timeout=args.timeout, platform=args.platform,
                 store=store_for(args), progress=progress_for(args), plain_http=args.plain_http,
                 insecure=args.insecure)
    for note in server.notes:
        print(f"note: {note}", file=sys.stderr)
    print(server.id)
    print(f"serving {args.image} ({server.runtime}) at {server.url}/v1; stop it with: ggufpack stop {server.id}",
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
        usage="ggufpack run [options] REF [PROMPT] [-- SERVER-ARGS...]",
        description="Start a llama.cpp server on the image's model files in the store, with the image's CMD, and "
                    "wait until it answers. With a PROMPT (or one piped into stdin), print the answer and stop; "
                    "with -it, chat in the terminal (both on a free loopback port; -p/--host do not apply). "
                    "Words after -- are extra llama-server arguments.",
    )
    run.add_argument("image", metavar="REF", help="image ref or ID (a registry ref is pulled when missing)")
    run.add_argument("prompt", metavar="PROMPT", nargs="?",
                     help="answer this once and exit ('-': read it from stdin); an embedding model prints the "
                          "vector as JSON")
    run.add_argument("-i", "--interactive", action="store_true", help="chat in the terminal (-it as with docker)")
    run.add_argument("-t", dest="tty", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("--runtime", choices=RUNTIMES, default="auto",
                     help="auto (default): llama-cpp-python's server when installed and it can honour the CMD "
                          "(it serves one slot, no draft model), else an installed llama-server")
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
