"""`ggufpack run`, `ps`, `stop`: not implemented yet (issue #8)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``ggufpack`` parser."""
