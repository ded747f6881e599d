"""`ggufpack backends list|install|remove|add`: llama.cpp backends (argument parsing and printing only)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_common import add_progress_options, positive_int, progress_for
from .errors import printable


def cmd_list(args: argparse.Namespace) -> int:
    from .backends import list_backends
    from .terminal import render_table

    backends = list_backends()
    for backend in backends:  # a tool that does not run, or that is refused as others could have changed it
        for problem in backend.problems:
            print(f"warning: {backend.name}: {printable(problem)}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps([b.to_json() for b in backends], indent=2))
        return 0
    rows = [["NAME", "KIND", "ACCELERATOR", "VERSION", "CAPABILITIES", "PATH"]]
    rows += [[b.name, b.kind, b.accelerator, b.version, ",".join(sorted(b.capabilities)) or "-",
              str(b.path) if b.path else "-"] for b in backends]
    print(render_table(rows))
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from .backends.install import install

    backend = install(args.name, source=Path(args.source) if args.source else None, jobs=args.jobs,
                      force=args.force, portable=args.portable, progress=progress_for(args))
    print(backend.name)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from .backends.registry import remove

    for name in args.names:
        print(remove(name))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from .backends.sideload import add

    data = add(Path(args.directory), args.name)
    capabilities = ", ".join(data["capabilities"]) or "nothing (its tools do not run)"
    print(f"added {data['name']}: {data['path']} ({data['accelerator']}, {data['version']}; {capabilities})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``ggufpack`` parser."""
    backends = sub.add_parser("backends", help="llama.cpp backends: list, install (build), remove, add (sideload)")
    actions = backends.add_subparsers(dest="backends_command", metavar="ACTION", parser_class=type(backends))
    actions.required = True

    lst = actions.add_parser("list", aliases=["ls"], help="list the backends usable here")
    lst.add_argument("--format", choices=["table", "json"], default="table")
    lst.set_defaults(func=cmd_list)

    install = actions.add_parser("install", help="build llama.cpp's tools from the llama-cpp-python sources")
    install.add_argument("name", metavar="NAME",
                         help="llama.cpp (best for this machine), llama.cpp-cpu, -cuda, -rocm or -vulkan")
    install.add_argument("--source", metavar="DIR",
                         help="llama.cpp source tree (default: the installed llama-cpp-python's sdist, via pip)")
    install.add_argument("--jobs", "-j", type=positive_int, metavar="N",
                         help="parallel compile jobs (default: all cores)")
    install.add_argument("--force", action="store_true", help="replace an installed backend of that name")
    install.add_argument("--portable", action="store_true",
                         help="CPU code for any machine of this architecture (GGML_NATIVE=OFF)")
    add_progress_options(install, "print only the backend name")
    install.set_defaults(func=cmd_install)

    remove = actions.add_parser("remove", aliases=["rm"],
                                help="remove a built backend, or forget a sideloaded one (its files stay)")
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(func=cmd_remove)

    add = actions.add_parser("add", help="sideload a directory of llama.cpp tools (used in place)")
    add.add_argument("directory", metavar="DIR")
    add.add_argument("--name", help="backend name (default: the directory path as a slug)")
    add.set_defaults(func=cmd_add)
