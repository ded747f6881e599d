"""The image reference grammar: Docker's, without docker.io normalization."""

from __future__ import annotations

import pytest

from ggufpack.errors import UsageError
from ggufpack.refs import Reference, canonical_reference, parse_reference

DIGEST = "sha256:" + "ab" * 32

VALID = [
    ("model", Reference(None, "model", "latest", None), "model:latest"),
    ("model:q4", Reference(None, "model", "q4", None), "model:q4"),
    ("org/model:v1.0", Reference(None, "org/model", "v1.0", None), "org/model:v1.0"),
    ("a/b/c", Reference(None, "a/b/c", "latest", None), "a/b/c:latest"),
    ("qwen2.5-0.5b_x__y---z", Reference(None, "qwen2.5-0.5b_x__y---z", "latest", None), None),
    ("localhost/model", Reference("localhost", "model", "latest", None), "localhost/model:latest"),
    ("localhost:5000/m:t", Reference("localhost:5000", "m", "t", None), "localhost:5000/m:t"),
    ("ghcr.io/org/model:Q5_K_M", Reference("ghcr.io", "org/model", "Q5_K_M", None), None),
    ("Registry.Example.com/x", Reference("Registry.Example.com", "x", "latest", None), None),
    ("127.0.0.1:5000/x:_t", Reference("127.0.0.1:5000", "x", "_t", None), None),
    ("[::1]:5000/x", Reference("[::1]:5000", "x", "latest", None), "[::1]:5000/x:latest"),
    ("localhost:5000", Reference(None, "localhost", "5000", None), "localhost:5000"),
    (f"model@{DIGEST}", Reference(None, "model", None, DIGEST), f"model@{DIGEST}"),
    (f"model:t@{DIGEST}", Reference(None, "model", "t", DIGEST), f"model:t@{DIGEST}"),
    ("m:" + "t" * 128, Reference(None, "m", "t" * 128, None), None),
    ("docker.io/library/ubuntu", Reference("docker.io", "library/ubuntu", "latest", None), None),
    ("abc", Reference(None, "abc", "latest", None), "abc:latest"),
]


@pytest.mark.parametrize(("text", "expected", "canonical"), VALID)
def test_valid(text: str, expected: Reference, canonical: str | None) -> None:
    ref = parse_reference(text)
    assert ref == expected
    if canonical is not None:
        assert str(ref) == canonical
    assert parse_reference(str(ref)) == ref
    assert canonical_reference(text) == str(ref)


def test_name_property() -> None:
    assert parse_reference("localhost:5000/a/b:c").name == "localhost:5000/a/b"
    assert parse_reference("a/b:c").name == "a/b"


INVALID = [
    ("", "empty"),
    ("  model", "whitespace"),
    ("Model", "lowercase"),
    ("org/MyModel:v1", "lowercase"),
    ("model:", "tag"),
    ("model:-bad", "tag"),
    ("model:.bad", "tag"),
    ("model:" + "t" * 129, "tag"),
    ("model:a/b", "registry"),
    ("model@sha256:abc", "digest"),
    ("model@md5:" + "a" * 32, "digest"),
    (f"model@{DIGEST.upper()}", "digest"),
    ("a//b", "empty path component"),
    ("model/", "empty path component"),
    ("-model", "path component"),
    ("mo..del", "path component"),
    ("model_", "path component"),
    ("mo___del", "path component"),
    ("exa_mple.com/x", "registry"),
    ("host.com:port/x", "registry"),
    (":tag", "missing"),
    ("a" * 64, "image ID"),
    ("x/" + "a" * 260, "longer than 255"),
]


@pytest.mark.parametrize(("text", "why"), INVALID)
def test_invalid(text: str, why: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_reference(text)
    message = str(info.value)
    assert repr(text) in message
    assert why in message
