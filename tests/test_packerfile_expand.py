"""Variable expansion, quotes and escapes, directly and through instructions (LABEL, COPY, CAT, CMD)."""

from __future__ import annotations

import pytest

from ggufpack.errors import PackerfileError, SourcePosition
from ggufpack.packerfile import lex
from ggufpack.packerfile.expand import Scope, expand
from ggufpack.plan import Plan, build_plan

SCOPE = Scope({"SET": "val", "EMPTY": ""}, frozenset({"SET", "EMPTY", "UNSET"}))


def run(text: str, scope: Scope | None = SCOPE, *, escape: str = "\\", heredoc: bool = False) -> str:
    return expand(
        text, scope, escape=escape, heredoc=heredoc, locate=lambda off: SourcePosition("P", 1, off + 1),
        source_line=lambda _line: text,
    )


@pytest.mark.parametrize(
    ("form", "if_set", "if_empty", "if_unset"),
    [
        ("$V", "val", "", ""),
        ("${V}", "val", "", ""),
        ("${V:-x}", "val", "x", "x"),
        ("${V-x}", "val", "", "x"),
        ("${V:+x}", "x", "", ""),
        ("${V+x}", "x", "x", ""),
        ("${V:?oops}", "val", None, None),
        ("${V?oops}", "val", "", None),
    ],
)
def test_expansion_forms(form: str, if_set: str, if_empty: str | None, if_unset: str | None) -> None:
    for name, expected in (("SET", if_set), ("EMPTY", if_empty), ("UNSET", if_unset)):
        text = form.replace("V", name)
        if expected is None:
            with pytest.raises(PackerfileError, match="oops"):
                run(text)
        else:
            assert run(text) == expected, text


def test_default_word_is_itself_expanded() -> None:
    assert run("${UNSET:-$SET/x}") == "val/x"
    assert run("${SET:+<${SET}>}") == "<val>"
    assert run("${UNSET:-a b}") == "a b"


def test_default_forms_allow_undeclared_names() -> None:
    assert run("${NOPE:-d}") == "d"
    assert run("${NOPE-d}") == "d"
    assert run("${NOPE:+d}") == ""
    with pytest.raises(PackerfileError, match="variable 'NOPE' is not declared") as info:
        run("ab${NOPE}")
    assert info.value.position.column == 3


def test_required_without_message() -> None:
    with pytest.raises(PackerfileError, match="variable 'UNSET' is required"):
        run("${UNSET:?}")


def test_names_stop_at_non_name_characters() -> None:
    assert run("$SET.gguf") == "val.gguf"
    assert run("$SET-x") == "val-x"
    assert run("${SET}x") == "valx"
    assert run("$SET$SET") == "valval"


def test_lone_dollar_is_literal() -> None:
    assert run("a$") == "a$"
    assert run("$ b") == "$ b"
    assert run("$1") == "$1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\$SET", "$SET"),
        ("\\${SET}", "${SET}"),
        ("a\\ b", "a b"),
        ("\\\\", "\\"),
        ("'$SET'", "$SET"),
        ('"$SET"', "val"),
        ('"a  b"', "a  b"),
        ("'a\\b'", "a\\b"),
        ('"a\\"b"', 'a"b'),
        ('"a\\b"', "a\\b"),
        ('"\\$SET"', "$SET"),
        ("x'y'\"z\"", "xyz"),
        ("\"it's\"", "it's"),
        ("'say \"hi\"'", 'say "hi"'),
    ],
)
def test_quotes_and_escapes(text: str, expected: str) -> None:
    assert run(text) == expected


def test_backtick_escape() -> None:
    assert run("C:\\dir\\`$SET", escape="`") == "C:\\dir\\$SET"
    assert run("a` b", escape="`") == "a b"


def test_no_scope_removes_quotes_without_expanding() -> None:
    assert run("'a' \"$X\"", None) == "a $X"


def test_heredoc_mode_keeps_quotes_and_most_escapes() -> None:
    assert run("say 'hi' \"$SET\"\\n \\$SET\n", heredoc=True) == "say 'hi' \"val\"\\n $SET\n"


def test_unterminated_quotes() -> None:
    with pytest.raises(PackerfileError, match="unterminated single quote") as info:
        run("ab'cd")
    assert info.value.position.column == 3
    with pytest.raises(PackerfileError, match="unterminated double quote"):
        run('"abc')


@pytest.mark.parametrize(("text", "column"), [("${", 1), ("x${}", 2), ("${SET", 1), ("${SET:-x", 1), ("${-x}", 1)])
def test_bad_substitution(text: str, column: int) -> None:
    with pytest.raises(PackerfileError, match="bad variable substitution") as info:
        run(text)
    assert info.value.position.column == column


# ------------------------------------------------------------------------- through instructions


def plan_of(text: str, **kwargs: object) -> Plan:
    return build_plan(lex(text, "P"), **kwargs)  # type: ignore[arg-type]


def op_args(text: str, stage: int = 0, index: int = 0) -> dict:
    return plan_of(text).stages[stage].ops[index].command.arguments()


CMD = 'CMD ["-m", "m.gguf"]\n'


def test_label_forms_and_quoting() -> None:
    text = (
        'ARG WHO=me\nFROM scratch\nLABEL a=b "c d"="e f" g=h\\ i j="$WHO" k=\'$WHO\' l=\n'
        "LABEL legacy value with spaces\n"
        + CMD
    )
    stage = plan_of(text).stages[0]
    assert stage.labels == {
        "a": "b", "c d": "e f", "g": "h i", "j": "me", "k": "$WHO", "l": "", "legacy": "value with spaces",
    }


def test_later_label_wins() -> None:
    assert plan_of("FROM scratch\nLABEL a=1\nLABEL a=2 b=3\n" + CMD).stages[0].labels == {"a": "2", "b": "3"}


def test_copy_words_are_expanded_and_unquoted() -> None:
    text = "ARG D=/models\nFROM scratch\nCOPY \"a b.gguf\" 'c$D' ${D}/ \n" + CMD
    assert op_args(text)["sources"] == ["a b.gguf", "c$D"]
    assert op_args(text)["dest"] == "/models/"


def test_json_form_is_expanded_but_not_unquoted_further() -> None:
    text = "ARG M=q4\nFROM scratch\nCOPY [\"a b\", \"'c'\", \"x-$M\", \"\\\\$M\", \"/d/${M}\"]\n" + CMD
    assert op_args(text)["sources"] == ["a b", "'c'", "x-q4", "$M"]
    assert op_args(text)["dest"] == "/d/q4"
    convert = "ARG M=q4\nFROM scratch\nCONVERT [\"/src/$M\", \"/$M.gguf\"]\n" + CMD
    assert (op_args(convert)["source"], op_args(convert)["dest"]) == ("/src/q4", "/q4.gguf")


def test_heredoc_expansion_and_quoted_delimiter() -> None:
    text = (
        "ARG NAME=bot\nFROM scratch\nCAT <<EOF /a\nI am $NAME, say \"hi\" \\$NAME\nEOF\n"
        "CAT <<'EOF' /b\nI am $NAME\nEOF\nCAT <<\"EOF\" /c\n${UNDECLARED}\nEOF\n" + CMD
    )
    stage = plan_of(text).stages[0]
    assert [op.command.arguments()["content"] for op in stage.ops[:3]] == [
        'I am bot, say "hi" $NAME\n', "I am $NAME\n", "${UNDECLARED}\n",
    ]


def test_cat_concatenates_heredocs_and_words() -> None:
    text = "FROM scratch\nCAT <<A <<-B /p\none\nA\n\ttwo\n\tB\n" + CMD
    assert op_args(text)["content"] == "one\ntwo\n"


def test_cmd_elements_are_expanded() -> None:
    text = 'ARG MODEL=q.gguf\nFROM scratch\nCMD ["-m", "/${MODEL}", "--alias", "\'$MODEL\'"]\n'
    assert plan_of(text).cmd.command.args == ("-m", "/q.gguf", "--alias", "'q.gguf'")


def test_arg_default_sees_earlier_args() -> None:
    text = "ARG A=x\nARG B=${A}y C=$A$A\nFROM scratch\nCOPY $B $C\n" + CMD
    assert op_args(text)["sources"] == ["xy"]
    assert op_args(text)["dest"] == "xx"
