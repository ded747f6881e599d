"""Malformed Packerfiles: each error names the exact line and column, through the library and the CLI.

Every case is checked twice: ``plan_file`` must raise :class:`PackerfileError` at the expected
position with a key phrase in its message, and ``python -m ggufpack plan -f FILE`` must exit with 2,
print ``error: FILE:LINE:COL:`` first on stderr and show no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ggufpack.errors import PackerfileError, UsageError
from ggufpack.plan import plan_file

SHA256 = "a" * 64


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    line: int
    column: int
    phrase: str


CASES = [
    Case("unknown-instruction", "FROM scratch\nCONVRT a b\n", 2, 1,
         "unknown instruction CONVRT (did you mean CONVERT?)"),
    Case("docker-only-run", "FROM scratch\nRUN echo hi\n", 2, 1, "RUN is not supported"),
    Case("docker-only-env-lowercase", "FROM scratch\n  env A=1\n", 2, 3, "ENV is not supported"),
    Case("missing-from", "# a comment\nARG A=1\nARG B=2\n", 3, 1, "no FROM instruction"),
    Case("empty-file", "", 1, 1, "no FROM instruction"),
    Case("instruction-before-from", "ARG A=1\nLABEL a=b\nFROM scratch\n", 2, 1, "LABEL before the first FROM"),
    Case("not-an-instruction", "FROM scratch\n$foo bar\n", 2, 1, "expected an instruction, found '$foo'"),
    Case("cmd-not-json", "FROM scratch\nCMD -m model.gguf\n", 2, 5, "CMD must use the JSON form"),
    Case("cmd-broken-json", 'FROM scratch\nCMD ["-m", "x.gguf"\n', 2, 5, "CMD must use the JSON form"),
    Case("cmd-first-arg", 'FROM scratch\nCMD  ["m", "model.gguf"]\n', 2, 7,
         "must be a llama-server option starting with '-'"),
    Case("cmd-without-model", 'FROM scratch\nCMD ["--port", "8080"]\n', 2, 1, "the final CMD names no model"),
    Case("cmd-empty", "FROM scratch\nCMD []\n", 2, 1, "CMD has no arguments"),
    Case("cmd-option-without-value", 'FROM scratch\nCMD ["-m"]\n', 2, 6, "-m needs FNAME after it"),
    Case("cmd-model-twice", 'FROM scratch\nCMD ["-m", "a", "--model", "b"]\n', 2, 5, "model given twice"),
    Case("cmd-undeclared-variable", 'FROM scratch\nCMD ["-m", "x", "--chat-template", "a\\"b$NOPE"]\n', 2, 41,
         "variable 'NOPE' is not declared"),
    Case("final-stage-without-cmd", "FROM scratch AS a\nCOPY a.gguf /\nFROM a AS b\n", 3, 1,
         "the final stage has no CMD"),
    Case("bad-flag", "FROM scratch\nCOPY --form=x a b\n", 2, 6, "unknown flag --form for COPY (did you mean --from?)"),
    Case("flag-twice", "FROM scratch\nCOPY --link --link a b\n", 2, 13, "flag --link is given twice"),
    Case("bool-flag-bad-value", "FROM scratch\nCOPY --link=maybe a b\n", 2, 13, "takes true or false, not 'maybe'"),
    Case("flag-without-value", "FROM scratch\nCOPY --from a b\n", 2, 6, "flag --from needs a value"),
    Case("flag-empty-value", "FROM scratch\nCOPY --chmod= a b\n", 2, 14, "flag --chmod has an empty value"),
    Case("convert-bad-type", "FROM scratch\nCONVERT --type=Q4_0 a b\n", 2, 9, "is not a conversion type"),
    Case("convert-fp16", "FROM scratch\nCONVERT --type=FP16 a b\n", 2, 9, "(F16 is spelled F16)"),
    Case("convert-lora-without-base", "FROM scratch\nCONVERT --class=lora a b\n", 2, 9, "--class=lora needs --base"),
    Case("convert-bad-class", "FROM scratch\nCONVERT --class=vision a b\n", 2, 9, "use model or lora"),
    Case("convert-arity", "FROM scratch\nCONVERT a\n", 2, 1, "takes exactly one source and one destination"),
    Case("quantize-bad-type", "FROM scratch\nQUANTIZE --type=Q5_K_X a b\n", 2, 10, "not a llama.cpp quantization type"),
    Case("quantize-include-exclude", "FROM scratch\nQUANTIZE --include-weights=a --exclude-weights=b a b\n", 2, 30,
         "cannot be used together"),
    Case("quantize-bad-tensor-type", "FROM scratch\nQUANTIZE --tensor-type=attn_v=q9_9 a b\n", 2, 10,
         "write PATTERN=TYPE"),
    Case("quantize-bad-output-tensor-type", "FROM scratch\nQUANTIZE --output-tensor-type=zz a b\n", 2, 10,
         "is not a ggml tensor type"),
    # the library's own checks (QuantizeOptions.validated), at plan time, at the flag (the item) as written
    Case("tensor-type-regex", "FROM scratch\nQUANTIZE --tensor-type=a=f16 --tensor-type=(=f16 a b\n", 2, 30, "regular"),
    Case("include-no-imatrix", "FROM scratch\nQUANTIZE --include-weights=attn a b\n", 2, 10, "give --imatrix too"),
    Case("exclude-no-imatrix", "FROM scratch\nQUANTIZE --pure --exclude-weights=ffn a b\n", 2, 17, "--imatrix too"),
    Case("kv-item", "FROM scratch\nQUANTIZE --override-kv=a=str:x --override-kv=b=int:x a b\n", 2, 32, "int needs"),
    Case("split-size", "FROM scratch\nCONVERT --split-max-size=2GB a b\n", 2, 9, "--split-max-size='2GB': write"),
    Case("checksum-format", "FROM scratch\nADD --checksum=md5:abc https://x.org/y /y\n", 2, 5,
         "write <algorithm>:<hex>"),
    Case("checksum-hex-length", "FROM scratch\nADD --checksum=sha256:abc https://x.org/y /y\n", 2, 5,
         "a sha256 digest is 64 hex digits"),
    Case("checksum-not-url", f"FROM scratch\nADD --checksum=sha256:{SHA256} a.gguf /y\n", 2, 5,
         "needs exactly one http(s):// source"),
    Case("undefined-stage-index", "FROM scratch\nCOPY --from=3 a b\n", 2, 13, "undefined stage 3"),
    Case("undefined-stage-name", "FROM scratch AS builder\nFROM scratch\nCOPY --from=bulder a b\n", 3, 13,
         "undefined stage 'bulder' (did you mean 'builder'?)"),
    Case("from-scratch-reads-nothing", "FROM scratch\nCOPY --from=scratch a b\n", 2, 13, "scratch is empty"),
    Case("cycle-two-stages", "FROM a AS b\nFROM b AS a\n", 2, 6, "stage dependency cycle: b -> a -> b"),
    Case("cycle-self", "FROM scratch AS a\nCOPY --from=a x y\n", 2, 13, "stage dependency cycle: a -> a"),
    Case("cycle-three-stages", "FROM scratch AS a\nCOPY --from=c x y\nFROM a AS b\nFROM b AS c\n", 3, 6,
         "stage dependency cycle: a -> c -> b -> a"),
    Case("duplicate-stage-name", "FROM scratch AS a\nFROM scratch AS A\n", 2, 17, "duplicate stage name 'a'"),
    Case("invalid-stage-name", "FROM scratch AS 1abc\n", 1, 17, "invalid stage name '1abc'"),
    Case("unterminated-heredoc", "FROM scratch\nCAT <<EOF /x\nhello\n", 2, 5, "unterminated heredoc"),
    Case("unterminated-second-heredoc", "FROM scratch\nCOPY <<A <<B /x\na\nA\nb\n", 2, 10, "no line 'B' closes it"),
    Case("bad-escape-directive", "# escape=x\nFROM scratch\n", 1, 10, "invalid escape token 'x'"),
    Case("duplicate-directive", "# escape=\\\n# ESCAPE=`\nFROM scratch\n", 2, 1, "only one escape parser directive"),
    Case("undeclared-variable", "FROM scratch\nCOPY $NOPE /c\n", 2, 6, "variable 'NOPE' is not declared"),
    Case("undeclared-variable-continuation", "FROM scratch\nCOPY a \\\n  # comment\n\n  b${NOPE} /c\n", 5, 4,
         "variable 'NOPE' is not declared"),
    Case("undeclared-variable-in-from", "FROM $BASE\n", 1, 6, "variable 'BASE' is not declared"),
    Case("undeclared-variable-in-heredoc", "FROM scratch\nCAT <<-EOF /x\n\t\thello $NOPE\n\tEOF\n", 3, 9,
         "variable 'NOPE' is not declared"),
    Case("stage-arg-not-in-other-stage", "FROM scratch\nARG A=1\nFROM scratch\nCOPY $A /c\n", 4, 6,
         "variable 'A' is not declared"),
    Case("required-variable", "ARG V\nFROM scratch\nCOPY x ${V:?you must set V} /c\n", 3, 8, "you must set V"),
    Case("unterminated-double-quote", 'FROM scratch\nCOPY "abc /c\n', 2, 6, "unterminated double quote"),
    Case("unterminated-single-quote", "FROM scratch\nCOPY a 'abc /c\n", 2, 8, "unterminated single quote"),
    Case("unterminated-quote-in-flag", 'FROM scratch\nCOPY --chown="0 a b\n', 2, 14, "unterminated double quote"),
    Case("bad-substitution-no-name", "FROM scratch\nCOPY ${ /c\n", 2, 6, "bad variable substitution"),
    Case("bad-substitution-digit", "FROM scratch\nCOPY ${1} /c\n", 2, 6, "expected a name after '${'"),
    Case("bad-substitution-missing-brace", "ARG V=1\nFROM scratch\nCOPY ${V /c\n", 3, 6, "missing '}'"),
    Case("empty-path-after-expansion", "ARG E=\nFROM scratch\nCOPY a $E /c\n", 3, 8, "empty source path"),
    Case("empty-json-source", 'ARG E=\nFROM scratch\nCOPY ["a", "$E", "/d"]\n', 3, 12, "COPY has an empty source path"),
    Case("undeclared-in-json-copy", 'FROM scratch\nADD ["a", "/models/${NOPE}"]\n', 2, 20,
         "variable 'NOPE' is not declared"),
    Case("empty-convert-path", "ARG E=\nFROM scratch\nCONVERT a ${E:-} \n", 3, 11, "CONVERT has an empty path"),
    Case("bad-chmod", "FROM scratch\nCOPY --chmod=999 a b\n", 2, 6, "use octal permissions"),
    Case("bad-chown", "FROM scratch\nADD --chown=user a b\n", 2, 5, "use numeric <uid>[:<gid>]"),
    Case("from-no-base", "FROM\n", 1, 1, "the base is missing"),
    Case("from-extra-word", "FROM scratch extra\n", 1, 14, "expected AS after the base"),
    Case("from-as-without-name", "FROM scratch AS\n", 1, 14, "AS needs a stage name"),
    Case("from-too-many", "FROM scratch AS a b\n", 1, 19, "unexpected 'b'"),
    Case("from-bad-platform", "FROM --platform=linux scratch\n", 1, 17, "write os/arch[/variant]"),
    Case("invalid-image-reference", "FROM Foo/Bar:x\n", 1, 6, "repository names must be lowercase"),
    Case("invalid-image-in-copy-from", "FROM scratch\nCOPY --from=a//b:1 x y\n", 2, 13, "invalid image reference"),
    Case("label-without-equals", "FROM scratch\nLABEL abc\n", 2, 7, "LABEL needs key=value pairs"),
    Case("label-mixed-forms", "FROM scratch\nLABEL a=b c\n", 2, 11, "LABEL expects key=value, got 'c'"),
    Case("label-empty-key", "FROM scratch\nLABEL =x\n", 2, 7, "LABEL has an empty key"),
    Case("invalid-arg-name", "FROM scratch\nARG 1A\n", 2, 5, "invalid ARG name '1A'"),
    Case("arg-without-name", "FROM scratch\nARG\n", 2, 1, "ARG needs a name"),
    Case("copy-from-heredoc", "FROM scratch AS a\nFROM scratch\nCOPY --from=a <<EOF /x\nhi\nEOF\n", 3, 6,
         "COPY --from cannot copy heredoc content"),
    Case("heredoc-as-destination", "FROM scratch\nCAT x <<EOF\nhi\nEOF\n", 2, 7, "a heredoc cannot be the destination"),
    Case("imatrix-chunks", "FROM scratch\nIMATRIX --chunks=0 a b c\n", 2, 9, "must be a positive integer"),
    Case("escape-backtick-undeclared", "# escape=`\nFROM scratch\nCOPY a `\n  $X /c\n", 4, 3,
         "variable 'X' is not declared"),
    Case("crlf-positions", "FROM scratch\r\nCOPY --link=x a b\r\n", 2, 13, "takes true or false"),
]


def test_enough_cases() -> None:
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("malformed")
    for case in CASES:
        (directory / f"{case.id}.Packerfile").write_bytes(case.text.encode())
    return directory


@pytest.fixture(scope="module")
def cli_results(case_dir: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run the CLI on every case at once (one interpreter start each, in parallel, to stay fast)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = {
        case.id: subprocess.Popen(
            [sys.executable, "-m", "ggufpack", "plan", "-f", f"{case.id}.Packerfile"], cwd=case_dir,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for case in CASES
    }
    results = {}
    for case_id, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[case_id] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_library_position(case: Case, case_dir: Path) -> None:
    path = case_dir / f"{case.id}.Packerfile"
    with pytest.raises(PackerfileError) as info:
        plan_file(path, display_name="GGUFPackerfile")
    err = info.value
    assert (err.position.line, err.position.column) == (case.line, case.column), str(err)
    assert err.position.file == "GGUFPackerfile"
    assert case.phrase in err.message
    # The rendered error shows the offending line and a caret under the column.
    rendered = str(err).splitlines()
    assert rendered[0].startswith(f"GGUFPackerfile:{case.line}:{case.column}: ")
    source = case.text.replace("\r\n", "\n").split("\n")
    if case.text:
        assert rendered[1].strip() == source[case.line - 1].expandtabs(1).strip()
        assert rendered[2].index("^") - 4 == case.column - 1


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cli_position(case: Case, cli_results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = cli_results[case.id]
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {case.id}.Packerfile:{case.line}:{case.column}: "), result.stderr
    assert case.phrase in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "ggufpack", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=60)


def test_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "GGUFPackerfile").write_text('FROM scratch AS a\nCMD ["-m", "a"]\nFROM a AS b\n')
    with pytest.raises(UsageError, match=r"--target 'c' is not a stage of this Packerfile \(stages: a, b\)"):
        plan_file(tmp_path / "GGUFPackerfile", target="c")
    result = _run_cli("plan", "--target", "c", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --target 'c' is not a stage")
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback(case_dir: Path) -> None:
    result = _run_cli("--debug", "plan", "-f", "bad-flag.Packerfile", cwd=case_dir)
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert "error: bad-flag.Packerfile:2:6: unknown flag --form" in result.stderr


@pytest.mark.parametrize(("text", "first_line"), [
    ("FROM scratch\nQUANTIZE --tensor-type=attn_(v=q6_k /m.gguf /q.gguf\n",
     "error: GGUFPackerfile:2:10: QUANTIZE --tensor-type='attn_(v=q6_k': 'attn_(v' is not a regular expression "
     "(missing ), unterminated subpattern at position 5)"),
    ("ARG W=ffn\nFROM scratch\nQUANTIZE --type=Q4_K_M \\\n  --exclude-weights=$W /m.gguf /q.gguf\n",
     "error: GGUFPackerfile:4:3: QUANTIZE --include-weights/--exclude-weights choose importance matrix entries: "
     "give --imatrix too"),
], ids=["tensor-type-regex", "exclude-weights-without-imatrix"])
def test_plan_refuses_what_quantize_refuses(tmp_path: Path, text: str, first_line: str) -> None:
    """``ggufpack plan`` applies the library's QUANTIZE checks: the build would fail there, so the plan does."""
    (tmp_path / "GGUFPackerfile").write_text(text)
    result = _run_cli("plan", ".", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == first_line
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = _run_cli("plan", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "no Packerfile at" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "P"
    path.write_bytes(b"FROM scratch\nLABEL a=\xff\n")
    with pytest.raises(PackerfileError, match=r"P:2:9: the Packerfile is not valid UTF-8"):
        plan_file(path, display_name="P")
