"""Hostile Packerfiles: expansion bombs, deep nesting, huge files and lines, many stages, bytes that are
not text. Every case runs in a forked child under an address-space budget and a deadline
(:mod:`tests.helpers.bounded`); only our own errors may come out, and where the input is refused the
error must name ``FILE:LINE:COL``.

Besides the found defects, random ARG graphs (each default a mix of literals and ``$V``/``${V}``/
``${V:-...}``/``${V:+...}`` references to earlier ARGs) are planned and compared with a reference
evaluator: the planner gives the same values, or refuses exactly when the reference's values grow past
the expansion limits.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.packerfile import MAX_PACKERFILE_BYTES, lex, read_packerfile
from ggufpack.packerfile.expand import MAX_EXPANDED_CHARS, MAX_TOTAL_EXPANDED_CHARS
from ggufpack.plan import build_plan, plan_file, render_text

from .helpers.bounded import Outcome, assert_clean, assert_refused, run_bounded

REPO = Path(__file__).resolve().parents[1]
CMD = 'CMD ["-m", "/m.gguf"]\n'
#: memory a case may map beyond the test process: the limits keep a refused bomb far below it
BUDGET_MB = 512
SECONDS = 60.0
POSITION = re.compile(r"^P:\d+:\d+: ", re.MULTILINE)

HOSTILE = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def plan_text(text: str, build_args: dict[str, str] | None = None) -> dict[str, object]:
    """Plan ``text`` (as the file ``P``) the way ``ggufpack plan`` does, rendering included."""
    plan = build_plan(lex(text, "P"), build_args=build_args)
    render_text(plan)
    return {"labels": plan.target_stage.labels, "cmd": plan.cmd.to_json()}


def plan_bytes(data: bytes) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "GGUFPackerfile"
        path.write_bytes(data)
        plan = plan_file(path, display_name="P")
        render_text(plan)
        return {"labels": plan.target_stage.labels}


def bounded(fn: object, *args: object) -> Outcome:
    return run_bounded(fn, *args, budget_mb=BUDGET_MB, seconds=SECONDS)  # type: ignore[arg-type]


def refused_at(outcome: Outcome, *fragments: str) -> Outcome:
    """Our error, naming ``P:LINE:COL``, and short enough to read."""
    assert_refused(outcome, *fragments)
    assert POSITION.search(outcome.message), outcome.message[:500]
    assert len(outcome.message) < 10_000
    return outcome


def doubling(count: int, seed: str = "xxxxxxxx") -> str:
    """``count`` ARGs, each the previous one twice: ARG ``A{count}`` holds ``len(seed) * 2**count`` characters."""
    lines = [f"ARG A0={seed}"] + [f"ARG A{i}=${{A{i - 1}}}${{A{i - 1}}}" for i in range(1, count + 1)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- item 8


def test_item08_arg_doubling_bomb_is_a_clear_error() -> None:
    """40 ARGs doubling a string and one LABEL using the last: a MemoryError before; now refused at the
    first ARG past the limit, long before memory runs out."""
    text = doubling(40) + "FROM scratch\nLABEL x=${A40}\n" + CMD
    outcome = refused_at(bounded(plan_text, text), "do ARGs double each other")
    line = int(outcome.message.split(":")[1])
    assert 8 << (line - 1) > MAX_EXPANDED_CHARS  # the first ARG whose value is over the limit
    assert outcome.message.startswith(f"P:{line}:15: ")  # at the ${A..} that makes it too long


def test_item08_arg_doubling_bomb_through_the_cli_exits_2(tmp_path: Path) -> None:
    (tmp_path / "GGUFPackerfile").write_text(doubling(40) + "FROM scratch\nLABEL x=${A40}\n" + CMD)
    limit = "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
    result = subprocess.run(
        [sys.executable, "-c", limit + "sys.argv = ['ggufpack', 'plan', sys.argv[1]]; "
         "runpy.run_module('ggufpack', run_name='__main__')", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "GGUFPackerfile:" in result.stderr and "do ARGs double each other" in result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr


def test_item08_sibling_heredoc_using_a_big_arg_many_times() -> None:
    body = "${A19}" * 8  # A19 holds 4 Mi characters: 8 of them in one heredoc is 32 Mi
    text = doubling(19) + f"FROM scratch\nCAT <<EOF /p.txt\n{body}\nEOF\n" + CMD
    outcome = refused_at(bounded(plan_text, text), "the limit for one word")
    assert outcome.message.startswith("P:23:7: ")  # the second ${A19} of the body line


def test_item08_sibling_many_labels_exhaust_the_total_budget() -> None:
    """Each LABEL stays under the per-word limit; together they pass the Packerfile's total."""
    per_label = MAX_EXPANDED_CHARS // 2  # A18: 8 * 2**18 = 2 Mi characters
    count = MAX_TOTAL_EXPANDED_CHARS // per_label + 2
    labels = "".join(f"LABEL k{i}=${{A18}}\n" for i in range(count))
    refused_at(bounded(plan_text, doubling(18) + "FROM scratch\n" + labels + CMD), "in all")


def test_item08_sibling_cmd_and_flags_are_bounded_too() -> None:
    big = doubling(19)
    cmd = 'CMD ["-m", "/m.gguf", "--alias", "${A19}${A19}"]\n'
    refused_at(bounded(plan_text, big + "FROM scratch\n" + cmd), "the limit for one word")
    flag = "FROM scratch\nQUANTIZE --type=${A19}${A19} /a /b\n" + CMD
    refused_at(bounded(plan_text, big + flag), "the limit for one word")


def test_item08_sibling_huge_build_arg_value_is_refused() -> None:
    text = "ARG A\nFROM scratch\nLABEL x=$A\n" + CMD
    outcome = assert_refused(bounded(plan_text, text, {"A": "y" * (MAX_EXPANDED_CHARS + 1)}), "--build-arg A")
    assert len(outcome.message) < 500
    assert_refused(bounded(plan_text, text, {"A": "a\x00b"}), "--build-arg A", "NUL")
    outcome = assert_refused(bounded(plan_text, text, {"A" * 100_000: "v"}), "the name has 100000 characters")
    assert len(outcome.message) < 500


def test_item08_sibling_deep_nesting_is_a_short_clear_error() -> None:
    """Refused at depth 32, never a RecursionError, and the 100 KB line is not echoed whole."""
    for opener, closer in (("${A:-", "}"), ('${A:-"', '"}'), ("${A:+'x'", "}"), ("${A-", "}")):
        text = "FROM scratch\nLABEL a=" + opener * 20_000 + closer * 20_000 + "\n" + CMD
        refused_at(bounded(plan_text, text), "nested more than")


def test_item08_sibling_many_stages_plan_in_linear_time() -> None:
    """Stage names were looked up by a scan per reference (quadratic): 30k stages took minutes."""
    stages = "".join(f"FROM scratch AS s{i + 1}\nCOPY --from=s{i} /x /x\n" for i in range(15_000))
    text = "FROM scratch AS s0\nCAT <<EOF /x\nhi\nEOF\n" + stages + CMD
    assert len(text) <= MAX_PACKERFILE_BYTES
    assert_clean(run_bounded(plan_text, text, budget_mb=BUDGET_MB, seconds=30), allow_ok=True)


def test_item08_sibling_many_args_plan_in_linear_time() -> None:
    """The scope was copied for every instruction (quadratic in ARGs times instructions)."""
    count = 30_000
    text = "".join(f"ARG A{i}=v\n" for i in range(count)) + "FROM scratch\n" \
        + "".join(f"LABEL k{i}=$A{i}\n" for i in range(count)) + CMD
    assert len(text) <= MAX_PACKERFILE_BYTES
    outcome = assert_clean(run_bounded(plan_text, text, budget_mb=BUDGET_MB, seconds=30))
    assert outcome.kind == "ok" and len(outcome.value["labels"]) == count


def test_item08_sibling_huge_line_continuation_and_long_lines() -> None:
    cont = "FROM scratch\nLABEL a=b \\\n" + "".join(f" k{i}=v \\\n" for i in range(60_000)) + " z=1\n" + CMD
    assert len(cont) <= MAX_PACKERFILE_BYTES
    assert assert_clean(bounded(plan_text, cont)).kind == "ok"
    long_word = "FROM scratch\nLABEL " + "x" * (MAX_PACKERFILE_BYTES - 100) + "\n" + CMD
    outcome = refused_at(bounded(plan_text, long_word), "LABEL needs key=value")
    assert len(outcome.message) < 1000  # the offending line is shown around its column, not whole


def test_item08_sibling_a_packerfile_too_big_is_refused_before_it_is_read_whole() -> None:
    data = b"FROM scratch\n" + b"# filler\n" * (MAX_PACKERFILE_BYTES // 9 + 10) + CMD.encode()
    assert_refused(bounded(plan_bytes, data), "larger than 1 MiB")
    assert_refused(bounded(plan_text, data.decode()), "larger than 1 MiB")


def test_item08_sibling_dev_zero_as_the_packerfile_is_bounded() -> None:
    def plan_dev_zero() -> object:
        return plan_file(Path("/dev/zero"), display_name="P")

    assert_refused(bounded(plan_dev_zero), "larger than 1 MiB")


# ------------------------------------------------------------------------------ issue 13 item


def test_issue13_nul_byte_names_line_and_column() -> None:
    outcome = refused_at(bounded(plan_bytes, b'FROM scratch\nCOPY a\x00b /x\n' + CMD.encode()), "NUL byte")
    assert outcome.message.startswith("P:2:7: ")
    assert "\x00" not in outcome.message


def test_issue13_invalid_utf8_names_line_and_column() -> None:
    outcome = refused_at(bounded(plan_bytes, "FROM scratch\nLABEL é=".encode() + b"\xff\n"), "not valid UTF-8")
    assert outcome.message.startswith("P:2:9: ")
    bom = refused_at(bounded(plan_bytes, b"\xef\xbb\xbfFROM \xc3(\n"), "not valid UTF-8")
    assert bom.message.startswith("P:1:6: ")  # the BOM is no column


def test_issue13_nul_and_invalid_utf8_exit_2_through_the_cli(tmp_path: Path) -> None:
    for data, where in ((b"FROM scratch\n\x00\n", "GGUFPackerfile:2:1: "), (b"FROM \xfe\n", "GGUFPackerfile:1:6: ")):
        (tmp_path / "GGUFPackerfile").write_bytes(data)
        result = subprocess.run([sys.executable, "-m", "ggufpack", "plan", str(tmp_path)], capture_output=True,
                                text=True, timeout=60, cwd=REPO)
        assert result.returncode == 2, result.stderr
        assert where in result.stderr and "Traceback" not in result.stderr


def test_terminal_escapes_in_a_packerfile_line_are_not_echoed_raw() -> None:
    outcome = refused_at(bounded(plan_text, "FROM scratch\nBOGUS \x1b]0;owned\x07 \x1b[2J\n"), "unknown instruction")
    assert "\x1b" not in outcome.message and "\x07" not in outcome.message


# ------------------------------------------------------------------------- property-based cases

NAMES = [f"V{i}" for i in range(30)]
Definitions = list[tuple[str, list[tuple[str, ...]]]]


@st.composite
def arg_graphs(draw: st.DrawFn) -> tuple[Definitions, str]:
    """ARGs whose defaults reference earlier ARGs (often several times: values may grow geometrically,
    past the limits); returns the definitions and the ARG a LABEL or heredoc prints."""
    count = draw(st.integers(1, len(NAMES)))
    literal = st.text(alphabet="abcxyz019._", min_size=0, max_size=6)
    grow = draw(st.booleans())  # every ARG also holds its predecessor twice: a doubling chain
    definitions: Definitions = []
    for index in range(count):
        parts: list[tuple[str, ...]] = [("braced", NAMES[index - 1], "")] * 2 if grow and index else []
        for _ in range(draw(st.integers(0, 4))):
            if index == 0 or draw(st.integers(0, 3)) == 0:
                parts.append(("lit", draw(literal)))
                continue
            ref = NAMES[draw(st.integers(max(0, index - 3), index - 1))]
            form = draw(st.sampled_from(["plain", "braced", "default", "alternative"]))
            parts.append((form, ref, draw(literal)))
        definitions.append((NAMES[index], parts))
    return definitions, NAMES[draw(st.integers(0, count - 1))]


def _render(parts: list[tuple[str, ...]]) -> str:
    out = []
    for part in parts:
        if part[0] == "lit":
            out.append(part[1])
        elif part[0] == "plain":
            out.append(f"${part[1]}.{part[2]}")  # '.' ends the name: whatever follows cannot join it
        elif part[0] == "braced":
            out.append(f"${{{part[1]}}}{part[2]}")
        elif part[0] == "default":
            out.append(f"${{{part[1]}:-{part[2]}}}")
        else:
            out.append(f"${{{part[1]}:+{part[2]}}}")
    return "".join(out)


def _reference(definitions: Definitions) -> dict[str, str | int]:
    """The values the expansion must give, by shell rules; once a value is large, only its length (an int)."""
    values: dict[str, str | int] = {}

    def length(value: str | int) -> int:
        return value if isinstance(value, int) else len(value)

    for name, parts in definitions:
        pieces: list[str | int] = []
        for part in parts:
            if part[0] == "lit":
                pieces.append(part[1])
                continue
            value = values[part[1]]
            if part[0] == "plain":
                pieces += [value, f".{part[2]}"]
            elif part[0] == "braced":
                pieces += [value, part[2]]
            elif part[0] == "default":
                pieces.append(value if length(value) else part[2])
            else:
                pieces.append(part[2] if length(value) else "")
        total = sum(length(p) for p in pieces)
        small = total <= 4096 and all(isinstance(p, str) for p in pieces)
        values[name] = "".join(p for p in pieces if isinstance(p, str)) if small else total
    return values


@HOSTILE
@given(arg_graphs(), st.booleans())
def test_random_arg_graphs_match_a_reference_evaluator(graph: tuple[Definitions, str], heredoc: bool) -> None:
    """Within the limits the plan holds the reference's values; past them, a clear refusal."""
    definitions, shown = graph
    args = "".join(f"ARG {name}={_render(parts)}\n" for name, parts in definitions)
    use = f"CAT <<EOF /p.txt\n${{{shown}}}\nEOF\n" if heredoc else f"LABEL shown=${{{shown}}}\n"
    text = args + "FROM scratch\n" + use + CMD
    expected = _reference(definitions)
    sizes = [v if isinstance(v, int) else len(v) for v in expected.values()]
    # what values add is at least each value less the literal text, and at most the values' sizes
    total = sum(sizes) + sizes[NAMES.index(shown)]
    must_refuse = max(sizes) > MAX_EXPANDED_CHARS + len(text) or total > MAX_TOTAL_EXPANDED_CHARS + len(text)
    must_plan = max(sizes) <= MAX_EXPANDED_CHARS and total <= MAX_TOTAL_EXPANDED_CHARS
    outcome = assert_clean(bounded(plan_text, text))
    if must_refuse:
        refused_at(outcome, "do ARGs double each other")
    elif must_plan:
        assert outcome.kind == "ok", outcome.message[:500]
        value = expected[shown]
        if not heredoc and isinstance(value, str):
            assert outcome.value["labels"]["shown"] == value
    elif outcome.kind == "ours":
        refused_at(outcome, "do ARGs double each other")


@st.composite
def nested(draw: st.DrawFn, depth: int = 0) -> str:
    """A random word of quotes, escapes and nested substitutions."""
    pieces = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["lit", "var", "nest", "dq", "sq", "esc"] if depth < 40 else ["lit", "var"]))
        if kind == "lit":
            pieces.append(draw(st.text(alphabet="ab$}{:-+?'\"\\ ", max_size=4)))
        elif kind == "var":
            pieces.append(draw(st.sampled_from(["$A", "${A}", "$B", "${UNSET:-u}", "${A:+y}", "$"])))
        elif kind == "nest":
            op = draw(st.sampled_from([":-", "-", ":+", "+", ":?", "?"]))
            pieces.append(f"${{{draw(st.sampled_from(['A', 'B', 'UNSET']))}{op}{draw(nested(depth + 1))}}}")
        elif kind == "dq":
            pieces.append(f'"{draw(nested(depth + 1))}"')
        elif kind == "sq":
            pieces.append(f"'{draw(st.text(alphabet='ab$ ', max_size=3))}'")
        else:
            pieces.append("\\" + draw(st.sampled_from(["$", "\\", '"', "a"])))
    return "".join(pieces)


def _nested_cases(words: list[str]) -> None:
    for word in words:
        base = f"ARG A={doubling(0)[7:-1]}\nARG B=${{A}}${{A}}\nFROM scratch\n"
        for use in (f"LABEL k={word}\n", f"COPY {word} /d\n", f'CMD ["-m", "{word.replace(chr(34), "")}"]\n',
                    f"CAT <<EOF /p\n{word}\nEOF\n", f"QUANTIZE --type={word} /a /b\n"):
            try:
                plan_text(base + use + (CMD if not use.startswith("CMD") else ""))
            except Exception as exc:  # only our own errors, each with a position or a clear message
                from ggufpack.errors import GGUFPackError

                if not isinstance(exc, GGUFPackError):
                    raise
                str(exc)


@HOSTILE
@given(st.lists(nested(), min_size=1, max_size=8))
def test_random_nested_substitutions_and_quotes(words: list[str]) -> None:
    assert_clean(bounded(_nested_cases, words))


@HOSTILE
@given(st.lists(st.tuples(st.sampled_from(["EOF", "E", "X-1"]), st.booleans(), st.booleans(),
                          st.text(alphabet="ab$\t {}\\\"'", max_size=12)), min_size=1, max_size=6),
       st.integers(0, 19))
def test_random_heredocs(docs: list[tuple[str, bool, bool, str]], size: int) -> None:
    markers, bodies = [], []
    for name, chomp, quoted, body in docs:
        delimiter = f"'{name}'" if quoted else name
        markers.append(f"<<{'-' if chomp else ''}{delimiter}")
        bodies.append(f"{body}\n${{A{size}}}${{A{size}}}\n\t{name}\n" if chomp else f"{body}\n${{A{size}}}\n{name}\n")
    text = doubling(size) + "FROM scratch\nCAT " + " ".join(markers) + " /p.txt\n" + "".join(bodies) + CMD
    outcome = assert_clean(bounded(plan_text, text))
    if outcome.kind == "ours":
        assert POSITION.search(outcome.message), outcome.message[:300]


@HOSTILE
@given(st.binary(min_size=1, max_size=64), st.integers(0, 3))
def test_random_bytes_in_a_valid_packerfile(junk: bytes, where: int) -> None:
    lines = [b"ARG Q=Q8_0", b"FROM scratch", b"LABEL k=v", CMD.encode().rstrip(b"\n")]
    lines[where] += junk
    outcome = assert_clean(bounded(plan_bytes, b"\n".join(lines) + b"\n"))
    if outcome.kind == "ours" and ("UTF-8" in outcome.message or "NUL" in outcome.message):
        assert POSITION.search(outcome.message), outcome.message[:300]


def test_read_packerfile_is_still_the_entry_point() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "P"
        path.write_text("FROM scratch\n" + CMD)
        assert read_packerfile(path).nodes[0].keyword == "FROM"
