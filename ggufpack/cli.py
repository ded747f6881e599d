"""Command-line interface: argument parsing and printing only; the work happens in the library."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import GGUFPackError, UsageError
from .packerfile import DEFAULT_FILENAME


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
    from .plan import plan_file, render_text

    path, display = _packerfile_path(args)
    plan = plan_file(
        path, display_name=display, build_args=parse_build_args(args.build_arg), target=args.target,
        platform=args.platform,
    )
    if args.format == "json":
        print(json.dumps(plan.to_json(), indent=2, ensure_ascii=False))
    else:
        print(render_text(plan))
    return 0


def _add_packerfile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", help=f"Packerfile path (default: CONTEXT/{DEFAULT_FILENAME})")
    parser.add_argument("--build-arg", action="append", default=[], metavar="K=V",
                        help="set a build-time variable declared by ARG (repeatable)")
    parser.add_argument("--target", help="stage to build (name or index; default: the last)")
    parser.add_argument("--platform", help="target platform os/arch (default: this machine's)")
    parser.add_argument("context", nargs="?", default=".", help="build context directory (default: .)")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="ggufpack", description="Build, store, ship and run GGUF model images.")
    parser.add_argument("--version", action="version", version=f"ggufpack {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    sub.required = True

    plan = sub.add_parser("plan", help="print the resolved stage graph of a Packerfile")
    _add_packerfile_options(plan)
    plan.add_argument("--format", choices=["text", "json"], default="text")
    plan.set_defaults(func=cmd_plan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except GGUFPackError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
