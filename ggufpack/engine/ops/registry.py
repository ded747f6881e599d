"""Each instruction's op, found by the name its definition gives (``"module:Class"`` in this package).

The Packerfile layer cannot import the engine, so a definition names its op and the engine resolves
the name here, on first use (``tests/test_packerfile_definitions.py`` resolves every one).
"""

from __future__ import annotations

import importlib
from functools import cache

from ...packerfile.instructions import BY_KEYWORD

PACKAGE = __name__.rpartition(".")[0]


@cache
def op_class(keyword: str) -> type:
    """The op class of the instruction ``keyword`` (its definition must name one)."""
    name = BY_KEYWORD[keyword].op
    if name is None:
        raise LookupError(f"{keyword} has no op: the planner alone handles it")
    module, _, cls = name.partition(":")
    return getattr(importlib.import_module(f"{PACKAGE}.{module}"), cls)
