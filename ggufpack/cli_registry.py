"""``ggufpack push``, ``pull``, ``login`` and ``logout``, and remote ``inspect``."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .cli_common import (
    add_progress_options,
    add_registry_options,
    client_for,
    positive_int,
    progress_for,
    store_for,
)
from .errors import UsageError
from .options.values import SIZE_HELP, size_in_bytes

if TYPE_CHECKING:
    from .refs import Reference


def _registry_ref(text: str) -> Reference:
    from .refs import parse_reference

    ref = parse_reference(text)
    if ref.registry is None:
        raise UsageError(f"{text!r} names no registry: write REGISTRY/NAME[:TAG], e.g. localhost:5000/{text}")
    return ref


@contextmanager
def _stop_on_signal(stop: threading.Event) -> Iterator[None]:
    """First SIGINT/SIGTERM: ``stop`` (finish the chunk in flight, keep the resume point); second: die."""
    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        stop.set()
        print("stopping after the current chunk (again to stop now)", file=sys.stderr)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def cmd_push(args: argparse.Namespace) -> int:
    from .api import push

    target = _registry_ref(args.target or args.image)
    progress = progress_for(args)
    chunk_size = size_in_bytes(args.chunk_size)
    if not chunk_size:
        raise UsageError(f"--chunk-size {args.chunk_size!r}: {SIZE_HELP}")
    stop = threading.Event()
    with _stop_on_signal(stop):
        result = push(args.image, str(target), store=store_for(args), progress=progress, plain_http=args.plain_http,
                      insecure=args.insecure, format=args.format, jobs=args.jobs, chunk_size=chunk_size, stop=stop)
    s = result.stats
    progress.log(f"pushed {result.reference}: {s.sent} blob(s) sent ({s.resumed} resumed), "
                 f"{s.skipped} already there, {s.mounted} mounted")
    print(result.digest)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from .api import pull

    ref = _registry_ref(args.image)
    progress = progress_for(args)
    result = pull(str(ref), store=store_for(args), platform=args.platform, progress=progress,
                  plain_http=args.plain_http, insecure=args.insecure, jobs=args.jobs)
    note = "" if result.format == "image" else \
        f" (imported from a {result.format} artifact as image {result.digest.removeprefix('sha256:')[:12]})"
    progress.log(f"pulled {result.reference}{note}: {result.stats.fetched} blob(s) fetched, "
                 f"{result.stats.present} already here")
    print(result.remote_digest)  # the registry's: what `pull REPO@DIGEST` pulls again, as docker pull prints
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.password is not None:
        print("warning: --password is visible to other users of this machine; prefer --password-stdin",
              file=sys.stderr)
        return str(args.password)
    if not sys.stdin.isatty():
        raise UsageError("no password: pass --password-stdin and pipe it in")
    return getpass.getpass("Password: ")


def cmd_login(args: argparse.Namespace) -> int:
    from .registry.auth import Credentials, save_credentials
    from .registry.client import CredentialsRefused, RegistryClient
    from .registry.settings import settings_for

    username = args.username
    if not username:
        if args.password_stdin or not sys.stdin.isatty():
            raise UsageError("no username: pass -u USER")
        username = input("Username: ").strip()
    creds = Credentials(username, _read_password(args))
    if not creds.password:
        raise UsageError("empty password")
    settings = settings_for(args.registry, plain_http=args.plain_http, insecure=args.insecure)
    try:
        RegistryClient(args.registry, settings, creds).ping()  # a wrong password fails here, before anything is saved
    except CredentialsRefused:
        raise CredentialsRefused(f"login to {args.registry} failed: the registry refused the credentials of user "
                                 f"{username!r} (wrong username or password?); nothing was saved", 401) from None
    path = save_credentials(args.registry, creds)
    print(f"Login succeeded ({args.registry}; credentials saved in {path})")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from .registry.auth import remove_credentials

    if remove_credentials(args.registry):
        print(f"Removed the credentials for {args.registry}")
    else:
        print(f"Not logged in to {args.registry}")
    return 0


def remote_details(ref: Reference, args: argparse.Namespace) -> dict[str, Any]:
    """``inspect`` of an image still in a registry: its manifest and config, never its layers."""
    from .images import image_details
    from .oci.platform import DEFAULT_PLATFORM
    from .oci.reader import ImageConfig, ImageManifest
    from .registry.pull import inspect_remote

    remote = inspect_remote(client_for(args, ref.registry or ""), ref, DEFAULT_PLATFORM)
    config = ImageConfig.parse(remote.config, str(ref))  # the typed reader list, pull and run use
    manifest = ImageManifest.parse(remote.parsed, str(ref))
    details = {
        "id": remote.manifest.digest.split(":", 1)[1], "digest": remote.manifest.digest, "refs": [str(ref)],
        "created": config.created, "format": remote.format, **image_details(manifest, config),
    }
    if remote.format != "image":  # another tool's artifact: what its manifest and config tell, until pulled
        from .formats import artifact_summary

        artifact = artifact_summary(remote.format, manifest, remote.config, str(ref))
        created = artifact.pop("created")
        details.update(created=details["created"] or created or "", artifact=artifact,
                       **{key: artifact.pop(key) for key in ("size", "cmd", "labels", "layers")})
    return details


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``ggufpack`` parser."""
    push = sub.add_parser("push", help="push an image to a registry")
    push.add_argument("image", help="stored image (REF or ID); a registry REF when TARGET is omitted")
    push.add_argument("target", nargs="?", help="registry reference to push as (default: IMAGE)")
    push.add_argument("--format", choices=["image", "modelpack"], default="image",
                      help="push the image, or its CNCF ModelPack artifact (raw GGUF layers)")
    push.add_argument("--jobs", type=positive_int, default=4, help="blobs sent at once (default: 4)")
    push.add_argument("--chunk-size", default="64M", metavar="SIZE",
                      help="bytes per upload request, what a resumed push may send twice (default: 64M)")
    add_registry_options(push)
    add_progress_options(push, "print only the manifest digest")
    push.set_defaults(func=cmd_push)

    pull = sub.add_parser("pull", help="pull an image (or a ModelPack, Docker or Ollama model) into the store")
    pull.add_argument("image", help="registry reference")
    pull.add_argument("--platform", help="os/arch to pick from an index (default: linux/amd64)")
    pull.add_argument("--jobs", type=positive_int, default=4, help="blobs fetched at once (default: 4)")
    add_registry_options(pull)
    add_progress_options(pull, "print only the manifest digest")
    pull.set_defaults(func=cmd_pull)

    login = sub.add_parser("login", help="save credentials for a registry (checked first)")
    login.add_argument("registry", help="HOST[:PORT]")
    login.add_argument("-u", "--username")
    login.add_argument("-p", "--password", help="the password (visible to others: prefer --password-stdin)")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add_registry_options(login)
    login.set_defaults(func=cmd_login)

    logout = sub.add_parser("logout", help="forget the credentials for a registry")
    logout.add_argument("registry", help="HOST[:PORT]")
    logout.set_defaults(func=cmd_logout)
