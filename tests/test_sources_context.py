"""The build context: ignore rules, source resolution, tree walks, cached hashing."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from ggufpack.errors import GGUFPackError, SourcePosition, UsageError
from ggufpack.sources.context import (
    ContextMatch,
    FileHashCache,
    hash_file,
    resolve_context_sources,
    walk_tree,
)
from ggufpack.sources.ignore import IgnoreRules, clean_path


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# (patterns, path, excluded?) — Docker's .dockerignore behavior
IGNORE_TABLE = [
    (["*.md"], "README.md", True),
    (["*.md"], "docs/README.md", False),  # "*" never crosses "/"
    (["**/*.md"], "docs/deep/README.md", True),
    (["**/*.md"], "README.md", True),  # "**" matches zero segments
    (["docs"], "docs/a/b.txt", True),  # a directory excludes its contents
    (["docs/**"], "docs/a/b.txt", True),
    (["docs/**"], "docs", False),
    (["/docs"], "docs/x", True),  # a leading "/" is dropped
    (["./docs/../docs//"], "docs/x", True),  # patterns are cleaned
    (["a/**/z"], "a/z", True),
    (["a/**/z"], "a/b/c/z", True),
    (["a/**/z"], "a/b/c/y", False),
    (["?.txt"], "a.txt", True),
    (["?.txt"], "ab.txt", False),
    (["[a-c].txt"], "b.txt", True),
    (["[^a-c].txt"], "b.txt", False),
    (["[^a-c].txt"], "d.txt", True),
    (["\\*.txt"], "*.txt", True),
    (["\\*.txt"], "a.txt", False),
    (["*.gguf", "!keep.gguf"], "keep.gguf", False),
    (["*.gguf", "!keep.gguf"], "drop.gguf", True),
    (["!keep.gguf", "*.gguf"], "keep.gguf", True),  # the last matching rule wins
    (["models", "!models/keep"], "models/keep/x.bin", False),
    (["models", "!models/keep"], "models/other.bin", True),
    (["**", "!README.md"], "README.md", False),
    (["**", "!README.md"], "src/main.py", True),
    (["# comment", "", "  *.tmp  "], "x.tmp", True),
    (["# comment"], "# comment", False),
    (["*"], ".", False),  # the context root is never excluded
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), IGNORE_TABLE)
def test_ignore_semantics(patterns: list[str], path: str, excluded: bool) -> None:
    assert IgnoreRules.from_patterns(patterns).is_excluded(path) is excluded


def test_ignore_file_preference_and_fallback(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*.a\n")
    assert IgnoreRules.load(tmp_path).is_excluded("x.a")
    (tmp_path / ".ggufpackerignore").write_text("*.b\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.is_excluded("x.b") and not rules.is_excluded("x.a")
    assert not IgnoreRules.load(tmp_path / "missing")


def test_bad_ignore_pattern_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".ggufpackerignore").write_text("ok\n[abc\n")
    with pytest.raises(UsageError, match=r"\.ggufpackerignore:2: bad pattern '\[abc'"):
        IgnoreRules.load(tmp_path)


def test_clean_path() -> None:
    assert clean_path("/a//b/./c/") == "a/b/c"
    assert clean_path("") == "."
    assert clean_path("../x") == "../x"


def test_walk_is_sorted_and_honors_ignore(tmp_path: Path) -> None:
    make_tree(tmp_path, {"b.txt": "b", "a/z.txt": "z", "a/y.log": "y", "c/keep.log": "k", "c/drop.log": "d"})
    (tmp_path / "link").symlink_to("a")
    rules = IgnoreRules.from_patterns(["*.log", "**/*.log", "c", "!c/keep.log"])
    listing = [(e.relpath, e.kind) for e in walk_tree(tmp_path, rules)]
    assert listing == [("a", "dir"), ("a/z.txt", "file"), ("b.txt", "file"), ("c", "dir"),
                       ("c/keep.log", "file"), ("link", "symlink")]
    link = next(e for e in walk_tree(tmp_path) if e.relpath == "link")
    assert link.link_target == "a" and link.size == 0


def test_walk_drops_excluded_dir_with_nothing_reincluded(tmp_path: Path) -> None:
    make_tree(tmp_path, {"c/x": "x", "d/y": "y"})
    rules = IgnoreRules.from_patterns(["c", "d", "!d/other"])
    assert [e.relpath for e in walk_tree(tmp_path, rules)] == []


def test_walk_subdir_uses_context_paths_for_rules(tmp_path: Path) -> None:
    make_tree(tmp_path, {"m/a.bin": "a", "m/b.txt": "b"})
    rules = IgnoreRules.from_patterns(["m/*.bin"])
    assert [e.relpath for e in walk_tree(tmp_path / "m", rules, rel_root="m")] == ["b.txt"]


def _summary(matches: list[ContextMatch]) -> list[tuple[str, str, list[str]]]:
    return [(m.relpath, m.kind, [e.relpath for e in m.contents]) for m in matches]


def test_resolve_plain_paths_and_dirs(tmp_path: Path) -> None:
    make_tree(tmp_path, {"model.gguf": "12345", "cfg/a.json": "{}", "cfg/sub/b.json": "{}"})
    os.chmod(tmp_path / "model.gguf", 0o640)
    matches = resolve_context_sources(tmp_path, ["model.gguf", "cfg", "/model.gguf"])
    assert _summary(matches) == [("model.gguf", "file", []), ("cfg", "dir", ["a.json", "sub", "sub/b.json"])]
    model = matches[0]
    assert model.size == 5 and model.mode == 0o640 and model.path == tmp_path.resolve() / "model.gguf"
    (whole,) = resolve_context_sources(tmp_path, ["."], excludes=["cfg/sub"])
    assert (whole.relpath, whole.kind) == (".", "dir")
    assert [e.relpath for e in whole.contents] == ["cfg", "cfg/a.json", "model.gguf"]


def test_resolve_globs(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a.gguf": "", "b.gguf": "", "c.txt": "", "sub/d.gguf": "", "sub/e/f.gguf": ""})
    assert [m.relpath for m in resolve_context_sources(tmp_path, ["*.gguf"])] == ["a.gguf", "b.gguf"]
    assert [m.relpath for m in resolve_context_sources(tmp_path, ["[ab].g?uf"])] == ["a.gguf", "b.gguf"]
    deep = resolve_context_sources(tmp_path, ["**/*.gguf"])
    assert [m.relpath for m in deep] == ["a.gguf", "b.gguf", "sub/d.gguf", "sub/e/f.gguf"]
    # "**" matching a directory carries its contents once, not again as separate matches
    assert _summary(resolve_context_sources(tmp_path, ["sub/**"])) == [
        ("sub/d.gguf", "file", []), ("sub/e", "dir", ["f.gguf"])]


def test_ignored_files_are_invisible(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a.gguf": "", "secret.key": "", "cfg/x.json": "", "cfg/x.bak": ""})
    (tmp_path / ".ggufpackerignore").write_text("*.key\n**/*.bak\n")
    assert [m.relpath for m in resolve_context_sources(tmp_path, ["*"])] == [
        ".ggufpackerignore", "a.gguf", "cfg"]
    assert _summary(resolve_context_sources(tmp_path, ["cfg"])) == [("cfg", "dir", ["x.json"])]
    with pytest.raises(GGUFPackError, match=r"'secret.key' .*excluded by .*\.ggufpackerignore"):
        resolve_context_sources(tmp_path, ["secret.key"])


def test_excluded_dir_reincluded_below(tmp_path: Path) -> None:
    make_tree(tmp_path, {"models/keep/x.bin": "", "models/drop.bin": ""})
    (tmp_path / ".dockerignore").write_text("models\n!models/keep\n")
    assert _summary(resolve_context_sources(tmp_path, ["models"])) == [
        ("models", "dir", ["keep", "keep/x.bin"])]


def test_exclude_flag(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a.gguf": "", "a.md": "", "docs/x.md": "", "docs/y.txt": "", "docs/z/w.md": ""})
    matches = resolve_context_sources(tmp_path, ["*", "docs"], excludes=["*.md"])
    # relative to "docs", "*.md" drops x.md; "*" does not cross "/", so z/w.md stays
    assert _summary(matches) == [("a.gguf", "file", []), ("docs", "dir", ["y.txt", "z", "z/w.md"])]
    matches = resolve_context_sources(tmp_path, ["docs"], excludes=["docs/**/*.md"])
    assert _summary(matches) == [("docs", "dir", ["y.txt", "z"])]
    with pytest.raises(GGUFPackError, match=r"'a\.md' matches no file"):
        resolve_context_sources(tmp_path, ["a.md"], excludes=["*.md"])


def test_missing_source_names_it_with_position(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": ""})
    position = SourcePosition("Packerfile", 3)
    with pytest.raises(GGUFPackError, match=r"^Packerfile:3:1: source 'nope.gguf' matches no file"):
        resolve_context_sources(tmp_path, ["nope.gguf"], position_hint=position)
    with pytest.raises(GGUFPackError, match=r"source '\*.bin' matches no file"):
        resolve_context_sources(tmp_path, ["*.bin"])


@pytest.mark.parametrize("source", ["..", "../x", "a/../../x", "/../etc/passwd"])
def test_dotdot_cannot_escape(tmp_path: Path, source: str) -> None:
    context = make_tree(tmp_path / "ctx", {"a/b": ""})
    make_tree(tmp_path, {"x": ""})
    with pytest.raises(UsageError, match="outside the build context"):
        resolve_context_sources(context, [source])


def test_dotdot_inside_context_is_fine(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a/b": "", "c": ""})
    assert [m.relpath for m in resolve_context_sources(tmp_path, ["a/../c", "/c"])] == ["c"]


def test_symlink_escapes_refused(tmp_path: Path) -> None:
    context = make_tree(tmp_path / "ctx", {"in.txt": ""})
    make_tree(tmp_path, {"outside/secret": "s"})
    (context / "abs").symlink_to(tmp_path / "outside" / "secret")
    (context / "rel").symlink_to("../outside/secret")
    (context / "dirlink").symlink_to(tmp_path / "outside")
    for source in ("abs", "rel", "dirlink/secret", "*"):
        with pytest.raises(UsageError, match="outside the build context"):
            resolve_context_sources(context, [source])


def test_top_level_symlink_followed_nested_kept(tmp_path: Path) -> None:
    context = make_tree(tmp_path, {"real/model.gguf": "weights", "real/cfg.json": "{}"})
    (context / "real" / "alias.gguf").symlink_to("model.gguf")
    (context / "model-link").symlink_to("real/model.gguf")
    (context / "dir-link").symlink_to(context / "real")  # absolute, but inside the context
    link, directory = resolve_context_sources(context, ["model-link", "dir-link"])
    assert (link.relpath, link.kind, link.size) == ("model-link", "file", 7)
    assert link.path == context.resolve() / "real" / "model.gguf"
    assert directory.kind == "dir"
    assert [(e.relpath, e.kind, e.link_target) for e in directory.contents] == [
        ("alias.gguf", "symlink", "model.gguf"), ("cfg.json", "file", None), ("model.gguf", "file", None)]
    (context / "dangling").symlink_to("nothing")
    with pytest.raises(GGUFPackError, match="symlink to 'nothing'"):
        resolve_context_sources(context, ["dangling"])


def test_hash_file(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(data)
    assert hash_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def _age(path: Path) -> None:
    past = time.time() - 60
    os.utime(path, (past, past))


def test_hash_cache_skips_rehash_and_notices_change(tmp_path: Path) -> None:
    big = tmp_path / "big.gguf"
    big.write_bytes(b"a" * (2 << 20))
    _age(big)
    cache_dir = tmp_path / "cache"
    first = FileHashCache(cache_dir).digest(big)
    assert first == hashlib.sha256(b"a" * (2 << 20)).hexdigest()
    assert (cache_dir / FileHashCache.FILE_NAME).exists()
    # A second cache (a later build) answers from the JSON file: prove it by planting a marker digest.
    record = (cache_dir / FileHashCache.FILE_NAME).read_text().replace(first, "f" * 64)
    (cache_dir / FileHashCache.FILE_NAME).write_text(record)
    assert FileHashCache(cache_dir).digest(big) == "f" * 64
    # Same size, new content: the stat key changes, so the file is hashed again.
    big.write_bytes(b"b" * (2 << 20))
    _age(big)
    assert FileHashCache(cache_dir).digest(big) == hashlib.sha256(b"b" * (2 << 20)).hexdigest()


def test_hash_cache_skips_small_and_fresh_files(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"x")
    fresh = tmp_path / "fresh"
    fresh.write_bytes(b"y" * (2 << 20))
    cache = FileHashCache(tmp_path / "cache")
    assert cache.digest(small) == hashlib.sha256(b"x").hexdigest()
    assert cache.digest(fresh) == hashlib.sha256(b"y" * (2 << 20)).hexdigest()
    assert not (tmp_path / "cache" / FileHashCache.FILE_NAME).exists()


def test_hash_cache_survives_damaged_file(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / FileHashCache.FILE_NAME).write_text("{not json")
    f = tmp_path / "f"
    f.write_bytes(b"z")
    assert FileHashCache(tmp_path / "cache").digest(f) == hashlib.sha256(b"z").hexdigest()
