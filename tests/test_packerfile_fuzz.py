"""Property tests: whatever the input, the parser and planner either succeed or raise a clean error.

A clean error is a :class:`PackerfileError` (or another :class:`UsageError`, e.g. for invalid UTF-8);
anything else (IndexError, KeyError, AssertionError, RecursionError...) is a bug.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.errors import PackerfileError, SourcePosition, UsageError
from ggufpack.packerfile import lex, read_packerfile
from ggufpack.plan import build_plan, render_text

VALID = """\
# syntax=ggufpack
ARG BASE=scratch
ARG Q=Q4_K_M
FROM $BASE AS hf
ADD --checksum=sha256:{sha} https://example.com/m.safetensors /src/
COPY --chmod=644 a.json \\
    # comment inside
    b.json /src/
CAT <<-EOF /prompt.txt
\tYou are ${{NAME:-a bot}}.
\tEOF
FROM scratch AS conv
CONVERT --from=hf --type=F16 /src /m.gguf
FROM scratch
ARG Q
QUANTIZE --from=conv --type=$Q --tensor-type=attn_v=q8_0 /m.gguf /q.gguf
COPY <<A <<'B' /cfg/
a $Q
A
b $Q
B
LABEL org.opencontainers.image.title="my model" k=v
CMD ["-m", "/q.gguf", "--lora-scaled", "/l.gguf:0.5"]
""".format(sha="a" * 64)

#: fragments that stress the lexer and expander when spliced in anywhere
FRAGMENTS = [
    "'", '"', "$", "${", "}", "${X", "${Q:-", "${Q:?", "<<", "<<EOF", "<<-", "<<'", "\\", "\\\n", "`", "[", "]",
    '["', "\x00", "\r", "\n", "\t", " ", "--", "--from=", "--type=", "#", "# escape=`\n", "=", "AS", "FROM ",
    "\ufeff", "é", "\u2028", "\x85", "\x0b",
]


def check_clean(text: str) -> None:
    try:
        plan = build_plan(lex(text, "P"), build_args={"Q": "Q8_0"})
    except PackerfileError as exc:
        assert isinstance(exc.position, SourcePosition)
        assert exc.position.line >= 1 and exc.position.column >= 1
        str(exc)  # rendering the caret must not fail either
    except UsageError:
        pass
    else:
        render_text(plan)
        plan.to_json()


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)))
        if action == "insert":
            text = text[:at] + piece + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    return text


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.lists(st.sampled_from([*FRAGMENTS, "a", "b", "COPY ", "CMD ", "CAT ", "ARG "]), max_size=30).map("".join))
def test_fragment_soup(text: str) -> None:
    check_clean("FROM scratch\n" + text)
    check_clean(text)


@FAST
@given(mutated())
def test_mutations_of_a_valid_packerfile(text: str) -> None:
    check_clean(text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    check_clean(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"", b"FROM scratch\n", VALID.encode()[:200]]))
def test_random_bytes_through_read_packerfile(data: bytes, prefix: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "GGUFPackerfile"
        path.write_bytes(prefix + data)
        try:
            parsed = read_packerfile(path)
            build_plan(parsed)
        except UsageError:
            pass


def test_the_valid_base_plans() -> None:
    plan = build_plan(lex(VALID, "P"))
    assert plan.order == [0, 1, 2]
    assert plan.stages[2].ops[1].command.arguments()["type"] == "Q4_K_M"


# ------------------------------------------------------------ pathological inputs found while fuzzing


def test_lone_continuation_lines() -> None:
    check_clean("\\")
    check_clean("FROM scratch\n\\\n\\\n# c\n")
    plan = build_plan(lex('FROM scratch\n   \\\nCMD ["-m", "x"]\n', "P"))
    assert plan.cmd.command is not None


def test_long_from_chain_does_not_recurse() -> None:
    text = "FROM scratch AS s0\n" + "".join(f"FROM s{i} AS s{i + 1}\n" for i in range(3000)) + 'CMD ["-m", "x"]\n'
    plan = build_plan(lex(text, "P"))
    assert plan.order == list(range(3001))
    assert plan.cmd.origin == "own"
    cyclic = text.replace("FROM scratch AS s0", "FROM s3000 AS s0")
    with pytest.raises(PackerfileError) as info:
        build_plan(lex(cyclic, "P"))
    expected = "stage dependency cycle: s0 -> s3000 -> s2999 -> s2998 -> ... (2995 more) -> s2 -> s1 -> s0"
    assert info.value.message == expected
    assert (info.value.position.line, info.value.position.column) == (2, 6)


def test_deeply_nested_substitutions_are_an_error() -> None:
    text = "FROM scratch\nCOPY " + "${A:-" * 2000 + "x" + "}" * 2000 + " /d\n"
    with pytest.raises(PackerfileError, match="nested more than"):
        build_plan(lex(text, "P"))


def test_deeply_nested_json_is_not_a_crash() -> None:
    with pytest.raises(PackerfileError, match="JSON form"):
        build_plan(lex("FROM scratch\nCMD " + "[" * 100_000 + "\n", "P"))
