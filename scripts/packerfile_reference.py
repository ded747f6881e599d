#!/usr/bin/env python3
"""Write ``docs/packerfile.md`` from the Packerfile instruction definitions.

Usage: ``python scripts/packerfile_reference.py [--check]``; ``--check`` writes nothing and exits 1 when
the committed reference differs from what the definitions say (``tests/test_packerfile_definitions.py``
checks the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "packerfile.md"
sys.path.insert(0, str(REPO))

from ggufpack.packerfile.reference import render  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 when the file is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
        if current != text:
            print(f"{REFERENCE.relative_to(REPO)} is stale: run python scripts/{Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    REFERENCE.write_text(text, encoding="utf-8")
    print(REFERENCE.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
