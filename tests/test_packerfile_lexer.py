"""The lexer: directives, comments, continuations, CRLF, keywords, flags, JSON form, heredocs.

The last part is a differential test against dockerfile-parse, an independent Dockerfile parser.
"""

from __future__ import annotations

import io
import random

import pytest
from dockerfile_parse import DockerfileParser

from ggufpack.errors import PackerfileError
from ggufpack.packerfile import lex
from ggufpack.packerfile.lexer import Node, ParsedText, split_words
from ggufpack.plan import build_plan


def nodes(text: str) -> list[Node]:
    return lex(text, "P").nodes


def words(node: Node) -> list[str]:
    return [w.text for w in node.words]


# ------------------------------------------------------------------------------------ directives


def test_directives_are_read_at_the_top() -> None:
    parsed = lex("# syntax=ggufpack/v1\n#  Escape = `\n# check=skip=all\nFROM scratch\n", "P")
    assert parsed.directives == {"syntax": "ggufpack/v1", "escape": "`", "check": "skip=all"}
    assert parsed.escape == "`"
    assert [n.keyword for n in parsed.nodes] == ["FROM"]


def test_directive_after_a_comment_is_just_a_comment() -> None:
    parsed = lex("# hello\n# escape=`\nFROM scratch\n", "P")
    assert parsed.directives == {}
    assert parsed.escape == "\\"


def test_directive_after_an_instruction_is_just_a_comment() -> None:
    parsed = lex("FROM scratch\n# escape=`\nCOPY a `\n", "P")
    assert parsed.directives == {}
    assert words(parsed.nodes[1]) == ["a", "`"]


def test_unknown_directive_ends_the_directive_block() -> None:
    parsed = lex("# foo=bar\n# escape=`\nFROM scratch\n", "P")
    assert parsed.directives == {}


def test_duplicate_directive_is_an_error() -> None:
    with pytest.raises(PackerfileError, match="only one syntax parser directive") as info:
        lex("# syntax=a\n# syntax=b\nFROM scratch\n", "P")
    assert info.value.position.line == 2


def test_backtick_escape_keeps_windows_paths() -> None:
    text = "# escape=`\nFROM scratch\nCOPY C:\\models\\m.gguf `\n    D:\\out\\ /dst\\\n"
    parsed = lex(text, "P")
    copy = parsed.nodes[1]
    assert words(copy) == ["C:\\models\\m.gguf", "D:\\out\\", "/dst\\"]
    assert copy.position.line == 3
    assert copy.words[1].position.line == 4
    assert copy.words[1].position.column == 5
    plan = build_plan(lex(text + 'CMD ["-m", "C:\\\\m.gguf"]\n', "P"))
    assert plan.stages[0].ops[0].command.arguments()["sources"] == ["C:\\models\\m.gguf", "D:\\out\\"]


# --------------------------------------------------------------------------- lines and keywords


def test_continuations_skip_comments_and_blank_lines() -> None:
    text = "FROM scratch\nCOPY a \\\n# a comment\n\n   # indented comment\n  b \\\n  c\nLABEL x=y\n"
    copy, label = nodes(text)[1:]
    assert words(copy) == ["a", "b", "c"]
    assert [w.position.line for w in copy.words] == [2, 6, 7]
    assert [w.position.column for w in copy.words] == [6, 3, 3]
    assert copy.end_line == 7
    assert label.position.line == 8


def test_continuation_at_end_of_file() -> None:
    (_, copy) = nodes("FROM scratch\nCOPY a b \\")
    assert words(copy) == ["a", "b"]


def test_escaped_escape_at_end_of_line_is_not_a_continuation() -> None:
    (_, copy, label) = nodes("FROM scratch\nCOPY a b\\\\\nLABEL x=y\n")
    assert words(copy) == ["a", "b\\\\"]
    assert label.keyword == "LABEL"


def test_crlf_files() -> None:
    text = "# escape=\\\r\nFROM scratch AS a\r\nCOPY a \\\r\n  b /c\r\nCAT <<EOF /p\r\nhello\r\nEOF\r\n"
    parsed = lex(text, "P")
    assert parsed.directives == {"escape": "\\"}
    from_, copy, cat = parsed.nodes
    assert words(from_) == ["scratch", "AS", "a"]
    assert words(copy) == ["a", "b", "/c"]
    assert cat.heredocs[0].body == "hello\n"
    assert "\r" not in "".join(parsed.lines)


def test_keywords_are_case_insensitive() -> None:
    parsed = lex("from scratch as A\ncOpY --link a b\n  label x=y\ncmd [\"-m\", \"b\"]\n", "P")
    assert [n.keyword for n in parsed.nodes] == ["FROM", "COPY", "LABEL", "CMD"]
    assert parsed.nodes[2].position.column == 3
    plan = build_plan(parsed)
    assert plan.stages[0].name == "a"
    # flag names are not case-folded, as in Docker
    with pytest.raises(PackerfileError, match="unknown flag --LINK"):
        build_plan(lex("FROM scratch\nCOPY --LINK a b\n", "P"))


def test_tabs_and_leading_whitespace() -> None:
    (node,) = nodes("\t FROM\tscratch   AS  x  \n")
    assert words(node) == ["scratch", "AS", "x"]
    assert node.position.column == 3
    assert node.words[2].position.column == 22


def test_bom_is_ignored(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    from ggufpack.packerfile import read_packerfile

    path = Path(str(tmp_path)) / "P"
    path.write_bytes(b"\xef\xbb\xbfFROM scratch\n")
    assert read_packerfile(path).nodes[0].keyword == "FROM"


# ------------------------------------------------------------------------------------------ flags


def test_flags_with_values_and_positions() -> None:
    (_, node) = nodes("FROM scratch\nCOPY --from=a --link  --exclude=*.md --exclude=x a b\n")
    assert [(f.name, f.value) for f in node.flags] == [
        ("from", "a"), ("link", None), ("exclude", "*.md"), ("exclude", "x"),
    ]
    assert [f.position.column for f in node.flags] == [6, 15, 23, 38]
    assert node.flags[0].value_position.column == 13
    assert words(node) == ["a", "b"]
    assert node.rest == "a b"


def test_double_dash_ends_flags() -> None:
    (_, node) = nodes("FROM scratch\nCOPY --link -- --weird-name /d\n")
    assert [f.name for f in node.flags] == ["link"]
    assert words(node) == ["--weird-name", "/d"]


def test_flags_only_before_arguments() -> None:
    (_, node) = nodes("FROM scratch\nCOPY a --link b\n")
    assert node.flags == []
    assert words(node) == ["a", "--link", "b"]


# ---------------------------------------------------------------------------------- JSON & shell


def test_json_form_and_shell_form() -> None:
    (_, json_node, shell_node, broken) = nodes(
        'FROM scratch\nCOPY ["a b", "/c d"]\nCOPY "a b" /c\nCMD ["-m", 1]\n'
    )
    assert json_node.json_args == ["a b", "/c d"]
    assert shell_node.json_args is None
    assert words(shell_node) == ['"a b"', "/c"]
    assert broken.json_args is None  # not an array of strings: shell form


def test_json_offsets_point_at_each_element() -> None:
    (_, cmd) = nodes('FROM scratch\nCMD [ "-m",\t"x" ]\n')
    assert cmd.json_offsets is not None
    assert [cmd.position_at(o).column for o in cmd.json_offsets] == [7, 13]


def test_split_words_quotes_and_braces() -> None:
    assert split_words("a 'b c' \"d e\" ${V:-x y} f\\ g", "\\") == [
        ("a", 0), ("'b c'", 2), ('"d e"', 8), ("${V:-x y}", 14), ("f\\ g", 24),
    ]


def test_label_forms_are_kept_raw() -> None:
    (_, node) = nodes('FROM scratch\nLABEL a=b "c d"="e f" g=h\\ i\n')
    assert words(node) == ["a=b", '"c d"="e f"', "g=h\\ i"]


# ---------------------------------------------------------------------------------------- heredocs


def test_heredoc_basic() -> None:
    (_, cat, label) = nodes("FROM scratch\nCAT <<EOF /p.txt\nline 1\n  line 2\nEOF\nLABEL a=b\n")
    (doc,) = cat.heredocs
    assert (doc.name, doc.body, doc.chomp, doc.expand) == ("EOF", "line 1\n  line 2\n", False, True)
    assert doc.body_line == 3
    assert cat.end_line == 5
    assert label.position.line == 6


def test_heredoc_dash_strips_leading_tabs() -> None:
    (_, cat) = nodes("FROM scratch\nCAT <<-END /p\n\t\tone\n\t  two\n\tEND\n")
    (doc,) = cat.heredocs
    assert doc.body == "one\n  two\n"
    assert doc.chomp
    assert doc.indents == (2, 1)


def test_heredoc_without_dash_keeps_tabs_and_needs_exact_delimiter() -> None:
    (_, cat) = nodes("FROM scratch\nCAT <<END /p\n\tone\n\tEND\nEND\n")
    assert cat.heredocs[0].body == "\tone\n\tEND\n"


@pytest.mark.parametrize("marker", ['<<"EOF"', "<<'EOF'", "<<-'EOF'"])
def test_quoted_delimiter_disables_expansion(marker: str) -> None:
    (_, cat) = nodes(f"FROM scratch\nCAT {marker} /p\n$HOME\nEOF\n")
    (doc,) = cat.heredocs
    assert doc.name == "EOF"
    assert not doc.expand
    assert doc.body == "$HOME\n"


def test_two_heredocs_in_one_copy() -> None:
    (_, copy, cmd) = nodes('FROM scratch\nCOPY <<A <<B /dir/\na body\nA\nb body\nB\nCMD ["-m", "x"]\n')
    assert [(h.name, h.body, h.body_line) for h in copy.heredocs] == [("A", "a body\n", 3), ("B", "b body\n", 5)]
    assert cmd.position.line == 7


def test_heredoc_plus_continuation() -> None:
    text = "FROM scratch\nCOPY --chmod=644 \\\n  <<EOF \\\n  /etc/prompt.txt\nhello\nEOF\n"
    (_, copy) = nodes(text)
    assert words(copy) == ["<<EOF", "/etc/prompt.txt"]
    assert copy.heredocs[0].body == "hello\n"
    assert copy.heredocs[0].body_line == 5
    assert copy.heredocs[0].position.line == 3


def test_heredoc_only_for_file_instructions() -> None:
    (_, label) = nodes("FROM scratch\nLABEL a=<<EOF\n")
    assert label.heredocs == []


def test_heredoc_empty_body() -> None:
    (_, cat) = nodes("FROM scratch\nCAT <<EOF /p\nEOF\n")
    assert cat.heredocs[0].body == ""


# ------------------------------------------------------------------- differential: dockerfile-parse

_KEYWORDS = ["FROM", "ARG", "ADD", "COPY", "CAT", "CONVERT", "QUANTIZE", "LABEL", "CMD"]
_WORDS = ["a", "b.gguf", "/models/", "'quoted word'", '"double q"', "${V:-x}", "$V", "x=y", "k=\"v w\"", "--link",
          "--from=base", "--type=Q4_K_M", "C:\\dir"]


def _random_packerfile(seed: int) -> str:
    """A heredoc-free Packerfile with comments, continuations, odd case and indentation."""
    rng = random.Random(seed)
    lines = ["FROM scratch AS base"]
    for _ in range(rng.randint(3, 15)):
        roll = rng.random()
        if roll < 0.15:
            lines.append(rng.choice(["# a comment", "   # indented comment", ""]))
            continue
        keyword = rng.choice(_KEYWORDS)
        keyword = rng.choice([keyword, keyword.lower(), keyword.capitalize()])
        indent = rng.choice(["", "  ", "\t"])
        if keyword.upper() == "CMD" and rng.random() < 0.7:
            lines.append(f'{indent}{keyword} ["-m", "model.gguf", "-c", "2048"]')
            continue
        args = [rng.choice(_WORDS) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.4:
            # split the arguments over continuation lines, with comment lines in between
            cut = rng.randint(1, len(args))
            first, second = " ".join(args[:cut]), " ".join(args[cut:]) or "z"
            middle = [rng.choice(["# inside", "  # inside, indented"])] if rng.random() < 0.5 else []
            lines.append(f"{indent}{keyword} {first} \\")
            lines.extend(middle)
            lines.append(f"    {second}")
        else:
            lines.append(f"{indent}{keyword} {' '.join(args)}")
    return "\n".join(lines) + "\n"


def _our_view(parsed: ParsedText) -> list[tuple[str, int, str]]:
    out = []
    for node in parsed.nodes:
        flags = [f"--{f.name}" + (f"={f.value}" if f.value is not None else "") for f in node.flags]
        out.append((node.keyword, node.position.line, " ".join([*flags, *node.rest.split()])))
    return out


def _oracle_view(text: str) -> list[tuple[str, int, str]]:
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    return [
        (item["instruction"], item["startline"] + 1, " ".join(item["value"].split()))
        for item in parser.structure
        if item["instruction"] != "COMMENT"
    ]


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_dockerfile_parse(seed: int) -> None:
    """Keywords, start lines and raw arguments (whitespace normalized) match dockerfile-parse.

    Deliberate differences, kept out of the generated files: a blank line inside a continuation ends
    the instruction for dockerfile-parse (old Docker) but is skipped by us (BuildKit), and a line ending
    in an escaped escape (``\\\\``) continues for dockerfile-parse but not for us.
    """
    text = _random_packerfile(seed)
    assert _our_view(lex(text, "P")) == _oracle_view(text), text


def test_blank_line_in_continuation_is_a_known_difference() -> None:
    text = "FROM scratch\nCOPY a \\\n\n  b /c\n"
    assert _our_view(lex(text, "P"))[1] == ("COPY", 2, "a b /c")
    assert _oracle_view(text)[1] == ("COPY", 2, "a")


def test_braces_inside_quotes_do_not_leave_a_word_open() -> None:
    (_, node) = nodes('FROM scratch\nLABEL a="on ${BASE}" b=\'${x\' c=${V:-"}"}x\n')
    assert words(node) == ['a="on ${BASE}"', "b='${x'", 'c=${V:-"}"}x']
    assert node.open_at is None
