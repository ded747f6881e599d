"""Command-line interface: argument parsing and printing only; the work happens in the library."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_common import add_progress_options, add_registry_options, client_for, progress_for, store_for
from .errors import NO_SPACE_ERRNOS, DiskFullError, GGUFPackError, UsageError, printable
from .oci.platform import DEFAULT_PLATFORM
from .packerfile import DEFAULT_FILENAME
from .version import __version__

if TYPE_CHECKING:
    from .oci.descriptor import Descriptor
    from .progress import Progress
    from .store import Store


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors become :class:`UsageError` (exit 2, one clear line)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def parse_build_args(values: Sequence[str]) -> dict[str, str]:
    """``--build-arg K=V`` values into a dict; a bare ``K`` takes ``K`` from the environment, as Docker."""
    import os

    out: dict[str, str] = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not name:
            raise UsageError(f"--build-arg {item!r}: write NAME=VALUE")
        if not eq:
            if name not in os.environ:
                raise UsageError(f"--build-arg {name}: no '=VALUE' and no {name} in the environment")
            value = os.environ[name]
        out[name] = value
    return out


def _packerfile_path(args: argparse.Namespace) -> tuple[Path, str]:
    context = Path(args.context)
    if args.file:
        path = Path(args.file)
        return path, args.file
    path = context / DEFAULT_FILENAME
    return path, str(path)


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import plan_file, plan_warnings, render_text

    path, display = _packerfile_path(args)
    plan = plan_file(
        path, display_name=display, build_args=parse_build_args(args.build_arg), target=args.target,
        platform=args.platform,
    )
    if args.format == "json":
        print(json.dumps(plan.to_json(), indent=2, ensure_ascii=False))
        for warning in plan_warnings(plan):
            print(warning, file=sys.stderr)
    else:
        print(render_text(plan))
    return 0


def parse_labels(values: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not key or not eq:
            raise UsageError(f"--label {item!r}: write KEY=VALUE")
        out[key] = value
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from .api import build

    path, _ = _packerfile_path(args)
    if args.engine == "buildkit":
        return _build_on_buildkit(args, path)
    progress = progress_for(args)
    store = store_for(args)
    result = build(
        args.context, file=path, tags=args.tag, build_args=parse_build_args(args.build_arg), target=args.target,
        labels=parse_labels(args.label), no_cache=args.no_cache, platform=args.platform, store=store,
        progress=progress, plain_http=args.plain_http, insecure=args.insecure, backend=args.backend,
    )
    from .plan import plan_warnings

    for warning in plan_warnings(result.plan, result.image.config["config"]["Cmd"]):
        print(warning, file=sys.stderr)  # even with -q, as plan prints them
    exported = _export(args, store, result.descriptor, result.refs, progress)
    stats = result.stats
    progress.log(f"built {result.image_id[:12]} ({stats.ops_run} op(s) run, {stats.ops_cached} cached)")
    for ref in result.refs:
        progress.log(f"tagged {ref}")
    if args.push:
        _push_tags(args, store, result.refs, progress)
    print(exported.digest)  # what --push and --output send: the image, or its ModelPack artifact
    return 0


def _export(args: argparse.Namespace, store: Store, image: Descriptor, refs: Sequence[str],
            progress: Progress) -> Descriptor:
    """``build --format modelpack`` and ``--output``, from the image in the store; what is printed and pushed."""
    from .image.export import export_image

    exported = image
    if args.format == "modelpack":
        from .formats.modelpack import export_modelpack

        exported = export_modelpack(store, image.digest)
        progress.log(f"ModelPack artifact {exported.digest}")
    for output in args.output:
        export_image(store, exported, output, ref=refs[0] if refs else None)
    return exported


def _build_on_buildkit(args: argparse.Namespace, path: Path) -> int:
    """``build --engine buildkit``: ``docker build`` with the frontend image, then ``docker save`` into the store."""
    from .frontend.docker_build import build_on_buildkit

    if args.backend:
        raise UsageError("--engine buildkit runs QUANTIZE and IMATRIX with the frontend image's llama.cpp: "
                         "--backend names a backend of this machine")
    if args.push and (args.output or args.format == "modelpack"):
        raise UsageError("--engine buildkit --push sends the image as docker pushes it: build into the store "
                         "(no --push), then --output or ggufpack push --format modelpack")
    progress = progress_for(args)
    store = store_for(args)
    result = build_on_buildkit(
        Path(args.context), file=path, frontend_image=args.frontend_image or "", tags=args.tag,
        build_args=parse_build_args(args.build_arg), labels=parse_labels(args.label), target=args.target,
        platform=args.platform, no_cache=args.no_cache, push=args.push,
        progress="quiet" if args.quiet else args.progress, store=store,
    )
    for ref in result.refs:
        progress.log(f"tagged {ref}")
    for ref in result.pushed:
        progress.log(f"pushed {ref}")
    if result.digest:
        image = store.resolve(result.refs[0]).descriptor
        print(_export(args, store, image, result.refs, progress).digest)
    return 0


def _push_tags(args: argparse.Namespace, store: Store, refs: Sequence[str], progress: Progress) -> None:
    """``build --push``: every -t that names a registry goes there."""
    from .refs import parse_reference
    from .registry.push import push_image

    targets = [parse_reference(ref) for ref in refs]
    targets = [t for t in targets if t.registry is not None]
    if not targets:
        raise UsageError("--push needs a -t that names a registry (REGISTRY/NAME:TAG)")
    for target in targets:
        result = push_image(store, str(target), target, client_for(args, target.registry or ""), progress,
                            fmt=args.format)
        progress.log(f"pushed {result.reference} ({result.digest})")


def cmd_load(args: argparse.Namespace) -> int:
    """``ggufpack load [FILE]`` / ``-i FILE`` / stdin: an OCI or docker archive into the store."""
    from .image.archive import load_archive, load_path

    name = args.input or args.file
    if args.file and args.input and args.file != args.input:
        raise UsageError("load: give the archive once, as FILE or as -i FILE")
    store = store_for(args)
    platform = args.platform or DEFAULT_PLATFORM
    if name and name != "-":
        result = load_path(store, Path(name), platform=platform, tags=args.tag)
    else:
        if sys.stdin.isatty():
            raise UsageError("load: no archive given and stdin is a terminal: give FILE, -i FILE or a pipe")
        result = load_archive(store, sys.stdin.buffer, "stdin", platform=platform, tags=args.tag)
    for ref in result.refs:
        print(f"Loaded image: {ref}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .images import list_images
    from .terminal import human_age, human_size, render_table

    summaries, warnings = list_images(store_for(args))
    for warning in warnings:  # one unreadable image is left out, never the whole list
        print(f"warning: {printable(warning)}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps([s.to_json() for s in summaries], indent=2))
        return 0
    rows = [["NAME", "TAG", "ID", "ARCH", "PARAMS", "BPW", "TYPE", "USAGE", "CREATED", "SIZE", "DISK"]]
    rows += [[s.name, s.tag, s.image_id, s.arch, s.params, s.bpw, s.file_type, s.usage, human_age(s.created),
              human_size(s.size), human_size(s.disk_usage)] for s in summaries]
    print(render_table(rows))
    return 0


def _model_line(entry: dict[str, Any]) -> str:
    bpw, params = entry["BitsPerWeight"], entry["Parameters"]
    facts = [entry["Architecture"] or "?", f"{'?' if params is None else params} parameters"]
    if bpw is not None:
        facts.append(f"{bpw:.2f} bpw")
    return f"{entry['CmdParameterValue']} ({', '.join(facts)})"


def cmd_inspect(args: argparse.Namespace) -> int:
    from .terminal import cell, human_size, terminal_json

    store = store_for(args)
    info = _local_or_remote_details(store, args)
    if args.format == "json":
        print(terminal_json(info))
        return 0
    # every value below may come from the image (GGUF metadata, labels, history): printed escaped
    print(f"ID:        {info['id']}")
    print(f"Refs:      {cell(', '.join(info['refs']) or '<none>')}")
    artifact = info.get("artifact")  # another tool's model artifact, still in the registry
    print(f"Created:   {cell(info['created']) or '<unknown>'}")
    kind = f"{artifact['format']} artifacts name" if artifact else "the image names"
    print(f"Platform:  {cell(info['platform']) if info['platform'] else f'<none> ({kind} none)'}")
    where = f"{human_size(info['disk_usage'])} on disk" if "disk_usage" in info else "in the registry"
    print(f"Size:      {human_size(info['size'] or 0)} of GGUF, {where}")
    cmd = cell(json.dumps(info["cmd"], ensure_ascii=False)) if info["cmd"] is not None else \
        "<made by pull from the artifact's layers>" if artifact else "<none>"
    print(f"Cmd:       {cmd}")
    facts = [artifact.get("architecture"), artifact.get("parameters") and f"{artifact['parameters']} parameters",
             artifact.get("quantization")] if artifact else []
    if any(facts):
        print(f"Model:     {cell(', '.join(f for f in facts if f))} (as the {artifact['format']} config states)")
    for role in ("model", "drafter", "projector"):
        if info[role]:
            print(f"{role.capitalize() + ':':<10} {cell(_model_line(info[role]))}")
    for adapter in info["adapters"]:
        print(f"Adapter:   {cell(adapter['CmdParameterValue'])}")
    print("Labels:")
    for key, value in sorted(info["labels"].items()):
        print(f"  {cell(key)}={cell(value)}")
    print("Layers:")
    for layer in info["layers"]:
        print(f"  {layer['digest'][:19]}  {human_size(layer['size']):>10}  {cell(layer['created_by'])}")
    return 0


def _local_or_remote_details(store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """The stored image, or for a registry ref not in the store, its manifest and config fetched remotely."""
    from .images import inspect_image

    try:
        return inspect_image(store, store.resolve(args.image))
    except UsageError:
        from .refs import parse_reference

        ref = parse_reference(args.image)
        if ref.registry is None:
            raise
    from .cli_registry import remote_details

    return remote_details(ref, args)


def cmd_tag(args: argparse.Namespace) -> int:
    print(store_for(args).tag(args.source, args.target))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    store = store_for(args)
    for item in args.images:
        for ref in store.remove(item, force=args.force):
            print(f"untagged {ref}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from .engine.cache import BuildCache
    from .terminal import human_size

    store = store_for(args)
    cache = BuildCache(store)
    if args.cache:
        print(f"dropped {cache.clear()} build cache record(s)")
    result = store.prune(cache.roots())
    print(f"removed {result.blobs_removed} blob(s) and {result.files_removed} file(s), "
          f"freed {human_size(result.bytes_freed)}")
    if result.images_held:
        print(f"kept {result.images_held} image(s) no ref names while running servers use them "
              "(they go with the next prune once those servers stop)")
    return 0


def _add_packerfile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", help=f"Packerfile path (default: CONTEXT/{DEFAULT_FILENAME})")
    parser.add_argument("--build-arg", action="append", default=[], metavar="K=V",
                        help="set a build-time variable declared by ARG (repeatable)")
    parser.add_argument("--target", help="stage to build (name or index; default: the last)")
    parser.add_argument("--platform", help=f"target platform os/arch (default: {DEFAULT_PLATFORM} on every machine: "
                                           "a model image holds no machine code)")
    parser.add_argument("context", nargs="?", default=".", help="build context directory (default: .)")


#: the modules that register the other commands (each a ``register(sub)``); not imported for a command
#: defined here, so that ``plan`` loads no registry, server or backend code
_COMMAND_MODULES = ("cli_registry", "cli_convert", "cli_quantize", "cli_backends", "cli_estimate", "cli_run",
                    "cli_frontend")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line's parser; with ``argv`` naming a command defined in this module
    (``plan``, ``build``, ...), one without the other modules' commands, which that line cannot reach."""
    parser = _ArgumentParser(prog="ggufpack", description="Build, store, ship and run GGUF model images.")
    parser.add_argument("--version", action="version", version=f"ggufpack {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    sub.required = True

    plan = sub.add_parser("plan", help="print the resolved stage graph of a Packerfile")
    _add_packerfile_options(plan)
    plan.add_argument("--format", choices=["text", "json"], default="text")
    plan.set_defaults(func=cmd_plan)

    build = sub.add_parser("build", help="build an image from a Packerfile into the local store")
    _add_packerfile_options(build)
    build.add_argument("-t", "--tag", action="append", default=[], help="name the image (repeatable)")
    build.add_argument("--label", action="append", default=[], metavar="K=V", help="add a label (repeatable)")
    build.add_argument("--no-cache", action="store_true", help="run every op even when cached")
    build.add_argument("--output", action="append", default=[], metavar="type=oci,dest=DIR",
                       help="also export: type=oci,dest=DIR or type=oci-archive,dest=FILE")
    build.add_argument("--push", action="store_true", help="push the -t tags that name a registry")
    build.add_argument("--backend", metavar="NAME",
                       help="llama.cpp backend for QUANTIZE and IMATRIX (default: llama-cpp-python in-process)")
    build.add_argument("--format", choices=["image", "modelpack"], default="image",
                       help="what --push and --output send, and whose digest is printed: the image, or its CNCF "
                            "ModelPack artifact (the store keeps the image under the tags either way)")
    build.add_argument("--engine", choices=["local", "buildkit"], default="local",
                       help="local: this process (default); buildkit: DOCKER_BUILDKIT=1 docker build with the "
                            "ggufpack frontend image (DOCKER_HOST honoured), then loaded into the store")
    build.add_argument("--frontend-image", metavar="REF",
                       help="with --engine buildkit: the ggufpack frontend image BuildKit pulls and runs "
                            "(passed as BUILDKIT_SYNTAX); required")
    add_registry_options(build)
    add_progress_options(build, "print only the digest (the image's; its artifact's with --format modelpack)")
    build.set_defaults(func=cmd_build)

    load = sub.add_parser("load", help="import an OCI image layout archive or a docker save archive")
    load.add_argument("file", nargs="?", help="the archive (default: stdin; gzip or plain tar)")
    load.add_argument("-i", "--input", help="the archive, as docker load -i")
    load.add_argument("-t", "--tag", action="append", default=[],
                      help="name the loaded image (repeatable; needed when the archive names none)")
    load.add_argument("--platform", help="os/arch to pick from an index (default: linux/amd64)")
    load.set_defaults(func=cmd_load)

    lst = sub.add_parser("list", aliases=["ls"], help="list images in the local store")
    lst.add_argument("--format", choices=["table", "json"], default="table")
    lst.set_defaults(func=cmd_list)

    inspect = sub.add_parser("inspect", help="show an image's manifest, config, labels and layers")
    inspect.add_argument("image", help="REF or ID (prefix)")
    inspect.add_argument("--format", choices=["text", "json"], default="text")
    add_registry_options(inspect)
    inspect.set_defaults(func=cmd_inspect)

    tag = sub.add_parser("tag", help="give an image another name")
    tag.add_argument("source")
    tag.add_argument("target")
    tag.set_defaults(func=cmd_tag)

    remove = sub.add_parser("remove", aliases=["rm"], help="remove image refs (blobs go with prune)")
    remove.add_argument("images", nargs="+", metavar="REF|ID")
    remove.add_argument("-f", "--force", action="store_true",
                        help="by ID, untag the image even when refs of several repositories name it")
    remove.set_defaults(func=cmd_remove)

    prune = sub.add_parser("prune", help="delete blobs and files no image or build cache entry uses")
    prune.add_argument("--cache", action="store_true", help="drop the build cache first")
    prune.set_defaults(func=cmd_prune)

    words = [a for a in argv or () if a != "--debug"]
    if not words or words[0] not in sub.choices:
        for name in _COMMAND_MODULES:
            importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:  # accepted anywhere on the line, not only before the command
        argv = ["--debug", *[a for a in argv if a != "--debug"]]
    try:
        try:
            args = build_parser(argv).parse_args(argv)
            func: Callable[[argparse.Namespace], int] = args.func
            code = func(args)
            sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
            return code
        except OSError as exc:
            # last resort: the store's writers already say which file; any other full disk is clear too
            if exc.errno not in NO_SPACE_ERRNOS:
                raise
            raise DiskFullError.from_os_error(exc) from exc
    except GGUFPackError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        # a message may quote input (a file, a registry's answer): no terminal escapes, no megabytes
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ggufpack list | head`: the reader went away; stop quietly, as cat does (128 + SIGPIPE)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
