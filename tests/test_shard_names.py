"""One shard-name rule (``NAME-00001-of-00003.gguf``), in :mod:`ggufpack.gguf_info.header`, used by all."""

from __future__ import annotations

import re
from pathlib import Path

from ggufpack.gguf_info import shard_name, shards_named_after, split_names

PACKAGE = Path(__file__).resolve().parents[1] / "ggufpack"
#: a string that builds or matches shard names: a format field, glob, regex or group right after ``-of-``
_RULE_TEXT = re.compile(r"-of-(?:\{|\?|\\d|\(|\[)")


def test_names_round_trip() -> None:
    names = [shard_name("m/tiny.Q8_0", i, 3) for i in (1, 2, 3)]
    assert names[0] == "m/tiny.Q8_0-00001-of-00003.gguf"
    assert split_names(names[1]) == names


def test_shards_named_after_takes_only_its_own_shards(tmp_path: Path) -> None:
    dest = tmp_path / "q[1]*.gguf"  # glob characters in the name are plain characters
    mine = [tmp_path / shard_name("q[1]*", i, 2) for i in (1, 2)]
    others = [tmp_path / shard_name("q1x", 1, 2), tmp_path / "q[1]*-0000a-of-00002.gguf", tmp_path / "q[1]*.gguf"]
    for path in (*mine, *others):
        path.write_bytes(b"")
    assert shards_named_after(dest) == mine
    assert shards_named_after(tmp_path / "absent" / "q.gguf") == []


def test_the_rule_is_spelled_once() -> None:
    """Derived from the sources: only gguf_info/header.py holds text that builds or matches shard names."""
    spelled = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
               if _RULE_TEXT.search(path.read_text(encoding="utf-8"))}
    assert spelled == {"gguf_info/header.py"}
