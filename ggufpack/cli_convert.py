"""`ggufpack convert`: not implemented yet (issues #4 and #5)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``ggufpack`` parser."""
