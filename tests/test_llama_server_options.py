"""llama-server's options as data (``ggufpack/options/llama_server.py``) and the CMD checker built on it.

Three oracles: the vendored llama.cpp sources (the generated module must be what the generator
writes from them, and a few facts read from ``common/arg.cpp`` and ``common/common.h`` here by plain
text search must be in it); the built llama-server's own ``--help`` (every spelling, value hint,
environment variable and help line); and the built llama-server's argument parser (for a set of
argvs, ours accepts exactly what it accepts).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from ggufpack.options import llama_server
from ggufpack.options.server_args import (
    ServerArgsError,
    check_server_args,
    find_option,
    parse_server_args,
    read_number,
    split_csv,
    suggest_options,
)

from .helpers.llamacpp_build import build_available, built_cpu_dir, llamacpp_source

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "llama_server_options.py"
MODULE = REPO / "ggufpack" / "options" / "llama_server.py"
REGENERATE = "python3 scripts/llama_server_options.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llama_server_options_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def llama_tree() -> Path:
    source = llamacpp_source()
    if source is None:
        pytest.skip("no local llama-cpp-python sources (the sdist that ggufpack backends install caches); "
                    "set GGUFPACK_LLAMACPP_SOURCE to an extracted sdist")
    tree = source / "vendor" / "llama.cpp" if (source / "vendor" / "llama.cpp").is_dir() else source
    return tree


def _opt(spelling: str):
    opt = find_option(spelling)
    assert opt is not None, f"{spelling} is not in ggufpack/options/llama_server.py"
    return opt


# ------------------------------------------------------------------------------------ (a) generated = committed


def test_committed_module_is_what_the_generator_writes_from_the_vendored_sources(llama_tree: Path) -> None:
    expected = _generator().generate(llama_tree)
    current = MODULE.read_text()
    if current != expected:
        diff = "".join(list(difflib.unified_diff(current.splitlines(True), expected.splitlines(True),
                                                 "committed", "regenerated"))[:60])
        pytest.fail(f"{MODULE.relative_to(REPO)} does not match llama.cpp at {llama_tree} (upgraded?): "
                    f"regenerate it with `{REGENERATE}` and commit the result\n{diff}")


def test_generated_module_is_plain_data() -> None:
    """Cheap to import: no llama_cpp, numpy or anything native, and named after its sources."""
    text = MODULE.read_text()
    imports = [line for line in text.splitlines() if re.match(r"\s*(import|from)\s", line)]
    assert imports == ["from __future__ import annotations", "from .server_option import ServerOption"]
    assert re.fullmatch(r"[0-9a-f]{7,40}", llama_server.LLAMA_CPP_COMMIT or "")
    assert llama_server.LLAMA_CPP_COMMIT in text.split('"""')[1]


def test_generator_check_mode(tmp_path: Path, llama_tree: Path) -> None:
    stale = tmp_path / "llama_server.py"
    stale.write_text("# old\n")
    gen = _generator()
    assert gen.main(["--source", str(llama_tree), "--output", str(stale), "--check"]) == 1
    assert gen.main(["--source", str(llama_tree), "--output", str(stale)]) == 0
    assert gen.main(["--source", str(llama_tree), "--output", str(stale), "--check"]) == 0


# ------------------------------------------------------------------------------------ (b) facts from the sources


def _common_h(tree: Path, field: str) -> str:
    m = re.search(rf"\b{re.escape(field)}\s*=\s*([^;]+);", (tree / "common" / "common.h").read_text())
    assert m, f"no {field} in common.h"
    return m.group(1).strip()


def _declaration(tree: Path, first_spellings: str) -> str:
    """The text of the ``add_opt(common_arg({...` whose spelling list starts with ``first_spellings``."""
    text = (tree / "common" / "arg.cpp").read_text()
    start = text.index("{" + first_spellings)
    return text[start:text.index("add_opt(", start)]


def test_ctx_size(llama_tree: Path) -> None:
    opt = _opt("-c")
    assert (opt.name, opt.spellings, opt.kind, opt.metavars, opt.parse) == (
        "--ctx-size", ("-c", "--ctx-size"), "int", ("N",), "stoi")
    assert opt.default == int(_common_h(llama_tree, "n_ctx"))  # 0 (the training context) at this version
    decl = _declaration(llama_tree, '"-c", "--ctx-size"}')
    assert f'set_env("{opt.env}")' in decl and "int value" in decl
    assert find_option("--ctx-size") is find_option("--ctx_size") is opt


def test_sampling_options(llama_tree: Path) -> None:
    temp, top_p, n = _opt("--temp"), _opt("--top-p"), _opt("-n")
    assert temp.spellings == ("--temp", "--temperature") and temp.kind == "float" and temp.sampling
    assert temp.default == float(_common_h(llama_tree, "temp").rstrip("f"))
    assert top_p.kind == "float" and top_p.default == float(_common_h(llama_tree, "top_p").rstrip("f"))
    assert n.name == "--predict" and set(n.spellings) == {"-n", "--predict", "--n-predict"} and n.kind == "int"
    assert n.default == int(_common_h(llama_tree, "n_predict"))
    assert _opt("--top-k").default == int(_common_h(llama_tree, "top_k"))
    assert _opt("--repeat-penalty").refuse_if == (("nonfinite", None), ("<=", 0.0))
    assert _opt("--seed").parse == "stoul"


def test_pooling_embedding_jinja(llama_tree: Path) -> None:
    pooling = _opt("--pooling")
    decl = _declaration(llama_tree, '"--pooling"}')
    assert pooling.kind == "choice" and pooling.choices == tuple(re.findall(r'value == "(\w+)"', decl))
    assert pooling.choices == ("none", "mean", "cls", "last", "rank") and pooling.default is None
    emb = _opt("--embeddings")
    assert emb.name == "--embedding" and emb.kind == "flag" and emb.nargs == 0 and emb.default is False
    assert emb.env == "LLAMA_ARG_EMBEDDINGS" and emb.server_specific
    jinja = _opt("--jinja")
    assert jinja.negations == ("--no-jinja",) and find_option("--no-jinja") is jinja
    assert jinja.default is (_common_h(llama_tree, "use_jinja") == "true")


def test_mmap_flags_follow_the_sources(llama_tree: Path) -> None:
    """``--mmap``/``--no-mmap`` exist only when arg.cpp declares them (this llama.cpp has ``--load-mode``)."""
    arg_cpp = (llama_tree / "common" / "arg.cpp").read_text()
    for flag in ("--mmap", "--no-mmap", "--mlock"):
        assert (find_option(flag) is not None) == (f'"{flag}"' in arg_cpp)
    if find_option("--no-mmap") is None:
        load = _opt("--load-mode")
        assert {"none", "mmap", "mlock"} <= set(load.choices or ()) and load.default == "auto"
        assert "--load-mode" in suggest_options("--no-mmap")


def test_gpu_layers_parallel_flash_attn(llama_tree: Path) -> None:
    ngl = _opt("-ngl")
    assert ngl.spellings == ("-ngl", "--gpu-layers", "--n-gpu-layers") and ngl.kind == "int"
    assert ngl.keywords == ("auto", "all") and ngl.default == "auto"
    assert _common_h(llama_tree, "n_gpu_layers").startswith("-1")
    np_ = _opt("-np")  # the server's own declaration (if ex == LLAMA_EXAMPLE_SERVER) and its default
    assert np_.default == -1 and np_.refuse_if == (("==", 0),) and np_.server_specific
    fa = _opt("-fa")
    assert fa.kind == "choice" and {"on", "off", "auto"} <= set(fa.choices or ()) and fa.default == "auto"
    assert _opt("-ctk").choices == ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
    assert _opt("-ctk").default == "f16"


def test_lists_removed_and_exiting_options() -> None:
    lora = _opt("--lora")
    assert lora.kind == "path" and lora.repeatable and lora.split == "csv"
    assert _opt("--host").split == "csv" and not _opt("--host").repeatable  # the handler clears the list first
    assert _opt("--draft").removed and "--spec-draft-n-max" in _opt("--draft").removed
    assert _opt("--version").exits and _opt("-h").exits and not _opt("-c").exits
    assert _opt("--chat-template-file").reads_file and not _opt("-m").reads_file
    assert _opt("--control-vector-layer-range").nargs == 2
    assert find_option("--prompt") is None  # excluded from the server (set_excludes)
    assert find_option("--ctx") is None


def test_every_spelling_once() -> None:
    seen: dict[str, str] = {}
    for opt in llama_server.OPTIONS:
        for s in opt.all_spellings:
            assert s not in seen, (s, seen.get(s), opt.name)
            seen[s] = opt.name
        assert opt.kind in ("flag", "int", "float", "choice", "path", "string")
        assert (opt.nargs == 0) == (opt.kind == "flag")


# ------------------------------------------------------------------------------------ the checker


def test_parse_types_values_in_order() -> None:
    args = parse_server_args(["-m", "model.gguf", "--temp", "0.2", "-c", "2048", "--lora", "a.gguf,b.gguf",
                              "--no-jinja", "--lora", "c.gguf", "-ngl", "auto", "--embedding"])
    assert args.values == {"--model": "model.gguf", "--temp": 0.2, "--ctx-size": 2048,
                           "--lora": ["a.gguf", "b.gguf", "c.gguf"], "--jinja": False, "--gpu-layers": "auto",
                           "--embedding": True}
    assert list(args.values) == ["--model", "--temp", "--ctx-size", "--lora", "--jinja", "--gpu-layers", "--embedding"]
    assert args.get("-c") == 2048 and args.get("--n-predict") is None and args.get("-n", -1) == -1
    assert args.effective("-c") == 2048 and args.effective("--batch-size") == 2048 and args.effective("-ub") == 512
    with pytest.raises(KeyError):
        args.get("--ctx")
    assert args.value_index("-m") == 1 and args.value_index("--lora") == 10 and args.value_index("--embedding") is None
    assert args.given("--jinja") and not args.given("--top-p") and args.warnings == ()
    assert [item.index for item in args.items] == [0, 2, 4, 6, 8, 9, 11, 13]


def test_last_value_wins_with_a_warning() -> None:
    args = parse_server_args(["-c", "1", "--ctx-size", "2", "--ctx_size", "3"])
    assert args.values == {"--ctx-size": 3} and [w.code for w in args.warnings] == ["repeated", "repeated"]
    assert parse_server_args(["--control-vector-layer-range", "1", "5"]).values == {
        "--control-vector-layer-range": (1, 5)}


@pytest.mark.parametrize(("argv", "index", "code", "words"), [
    (["--ctx", "2048"], 0, "unknown-option", "did you mean --ctx-size"),
    (["-m", "x.gguf", "--no-mmap"], 2, "unknown-option", "--load-mode"),
    (["--ctx-size=2048"], 0, "unknown-option", "two arguments"),
    (["model.gguf"], 0, "positional", "no positional"),
    (["--lora-scaled", "a.gguf", "0.5"], 2, "positional", "takes one argument, FNAME:SCALE,... (write 'a.gguf:0.5')"),
    (["-m", "x.gguf", "-c"], 2, "missing-value", "-c needs N"),
    (["-c", "abc"], 1, "bad-value", "whole number"),
    (["-c", "99999999999"], 1, "bad-value", "out of range"),
    (["--temp", "warm"], 1, "bad-value", "number"),
    (["--temp", "1e39"], 1, "bad-value", "out of range"),
    (["--pooling", "avg"], 1, "bad-value", "none, mean, cls, last, rank"),
    (["-fa", "yes"], 1, "bad-value", "one of on"),
    (["-np", "0"], 1, "bad-value", "equal to 0"),
    (["--draft", "4"], 0, "removed", "--spec-draft-n-max"),
])
def test_problems_name_the_index_and_the_fault(argv: list[str], index: int, code: str, words: str) -> None:
    problem = check_server_args(argv)
    assert problem is not None and (problem.index, problem.code) == (index, code), problem
    assert words in problem.message and problem.arg == argv[index]
    with pytest.raises(ServerArgsError) as caught:
        parse_server_args(argv)
    assert caught.value.problem == problem and caught.value.exit_code == 2


def test_accepted_but_suspicious() -> None:
    args = parse_server_args(["-c", "2048k", "--alias", "-m", "--version"])
    assert args.values["--ctx-size"] == 2048
    assert [w.code for w in args.warnings] == ["trailing-text", "looks-like-option", "exits"]
    assert args.warnings[0].index == 1


def test_numbers_read_as_the_cpp_library_does() -> None:
    assert read_number(" 12x", "stoi") == (12, "x")
    assert read_number("-1", "stoul")[0] == 2**64 - 1
    assert read_number("0x1p3", "stof") == (8.0, "")
    assert read_number("inf", "stof")[0] == float("inf")
    for bad in ("", "x1", "2147483648"):
        with pytest.raises(ValueError):
            read_number(bad, "stoi")
    for bad in ("1e39", "1e-40", "e5"):
        with pytest.raises(ValueError):
            read_number(bad, "stof")
    assert split_csv('a,"b,c",d""e,"f""g"') == ["a", "b,c", 'd""e', 'f"g']


# ------------------------------------------------------------------------------------ (c) the real llama-server

needs_llama_server = pytest.mark.skipif(
    not build_available(),
    reason="no llama.cpp CPU build cached under ~/.cache/ggufpack-tests (GGUFPACK_TESTS_CACHE) and no local "
           "llama-cpp-python sources to build one from",
)


@pytest.fixture(scope="module")
def llama_server_bin() -> Path:
    tool = built_cpu_dir() / "bin" / "llama-server"
    assert tool.is_file(), f"the cached llama.cpp build has no {tool}"
    return tool


def _clean_env(home: Path) -> dict[str, str]:
    """No LLAMA_ARG_* or other variable llama-server reads options from; no user config.ini."""
    env_vars = {o.env for o in llama_server.OPTIONS if o.env} | {"LLAMA_API_KEY", "HF_TOKEN"}
    env = {k: v for k, v in os.environ.items() if k not in env_vars and not k.startswith("LLAMA_ARG_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
    return env


#: what llama-server logs once its argument parser has accepted the command line
ACCEPTED = "llama_server: initializing"


def _llama_server_accepts(tool: Path, argv: list[str], home: Path, seconds: float = 20.0) -> tuple[bool, str]:
    """Start llama-server with ``argv`` and stop it (by its PID) as soon as it has said whether its
    argument parser accepts it: it logs ``initializing`` after parsing, or exits with an argument error."""
    proc = subprocess.Popen([str(tool), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=_clean_env(home), cwd=home)
    assert proc.stdout is not None
    output = b""
    deadline = time.monotonic() + seconds
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while ACCEPTED.encode() not in output and time.monotonic() < deadline:
                if not sel.select(timeout=0.2):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                output += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
    text = output.decode(errors="replace")
    if ACCEPTED in text:
        return True, text
    assert proc.returncode != 0 and time.monotonic() < deadline, f"llama-server neither started nor refused:\n{text}"
    return False, text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: argvs after ``-m <absent file> --port N``: valid ones, and one of each kind of problem (none that
#: silences the log: the verdict reads llama-server's "initializing" line)
VERDICT_CASES = [
    ["-c", "64", "--temp", "0.2", "--top-p", "0.9", "-n", "16", "--top-k", "20", "--min-p", "0.05"],
    ["--pooling", "mean", "--embedding", "-ub", "64", "-b", "64"],
    ["--no-jinja", "-ngl", "auto", "-fa", "off", "--ctx_size", "32", "-np", "2", "--kv-unified"],
    ["-ctk", "q8_0", "-ctv", "f16", "--load-mode", "none", "--no-warmup", "--seed", "-1"],
    ["--lora", "a.gguf,b.gguf", "--lora-scaled", "c.gguf:0.5", "--alias", "tiny", "--reasoning", "off"],
    ["-c", "2048k"],  # std::stoi stops at the k
    ["-c", " 64", "--reasoning-format", "deepseek", "--sleep-idle-seconds", "-1"],
    ["--temp", "inf", "--top-p", "0x1p-1", "--min-p", " .5"],
    ["--control-vector-layer-range", "1", "2", "--host", "127.0.0.1"],
    ["--ctx", "2048"],  # unknown option
    ["--no-mmap"],  # not an option of this llama.cpp
    ["--ctx-size=2048"],
    ["model.gguf"],  # positional
    ["-c"],  # missing argument
    ["--control-vector-layer-range", "1"],
    ["-c", "abc"],  # bad int
    ["-c", "99999999999"],
    ["--temp", "warm"],
    ["--temp", "1e39"],
    ["--temp", "1e-40"],
    ["--pooling", "avg"],
    ["-fa", "yes"],
    ["-ctk", "q3_k"],
    ["-ctk", "Q8_0"],  # ggml type names are lower case
    ["--reasoning-format", "bogus"],  # refused by a helper (common_reasoning_format_from_name)
    ["--sleep-idle-seconds", "0"],
    ["-np", "0"],
    ["--repeat-penalty", "0"],
    ["--draft", "4"],  # removed
]


@needs_llama_server
@pytest.mark.parametrize("argv", VERDICT_CASES, ids=[" ".join(a) for a in VERDICT_CASES])
def test_verdict_agrees_with_llama_server(llama_server_bin: Path, tmp_path: Path, argv: list[str]) -> None:
    full = ["-m", str(tmp_path / "absent.gguf"), "--port", str(_free_port()), *argv]
    accepted, output = _llama_server_accepts(llama_server_bin, full, tmp_path)
    problem = check_server_args(full)
    assert (problem is None) == accepted, (
        f"llama-server {'accepts' if accepted else 'refuses'} {argv}, ggufpack says "
        f"{problem.message if problem else 'fine'}\n{output[-3000:]}")


@needs_llama_server
def test_data_matches_llama_server_help(llama_server_bin: Path, tmp_path: Path) -> None:
    """Every entry of ``llama-server --help``: our spellings, value hints, environment variable and help line."""
    done = subprocess.run([str(llama_server_bin), "--help"], capture_output=True, text=True, timeout=60,
                          env=_clean_env(tmp_path), check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    entries: dict[int, str] = {i: line for i, line in enumerate(lines) if line.startswith("-") and
                               not line.startswith("-----")}
    matched: set[int] = set()
    for opt in llama_server.OPTIONS:
        names = list(opt.all_spellings)
        head = names[0] if len(names) == 1 else f"{names[0] + ', ':<7}" + ", ".join(names[1:])
        head += "".join(f" {m}" for m in (opt.metavars or ()))
        hits = [i for i, line in entries.items()
                if line == head or (len(head) <= 37 and line.startswith(f"{head:<40}"))
                or (opt.metavars is None and line.startswith(head + " "))]
        assert len(hits) == 1, f"{opt.name}: {head!r} is not one entry of llama-server --help"
        i = hits[0]
        matched.add(i)
        # a head of up to 37 characters is padded to column 40, where the help starts; a longer one
        # (no run of three blanks in it) has the help on the next lines
        text = [lines[i][40:]] if lines[i][37:40] == "   " else []
        j = i + 1
        while j < len(lines) and lines[j].startswith(" " * 40):
            text.append(lines[j][40:])
            j += 1
        printed = " ".join(" ".join(text).split())
        envs = re.findall(r"\(env: ([^)]*)\)", printed)
        assert (envs[-1] if envs else None) == opt.env, opt.name
        ours = " ".join(opt.help.split())
        known = ours.split("<")[0]  # up to what the generator could not evaluate, if anything
        assert printed.startswith(ours) or printed.startswith(known), (
            f"{opt.name}: help {ours!r} but llama-server prints {printed[:200]!r}")
    assert sorted(set(entries) - matched) == [], [entries[i] for i in sorted(set(entries) - matched)]
