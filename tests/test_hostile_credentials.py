"""Hostile credential files: Docker's ``config.json``, Podman's ``auth.json`` (``$REGISTRY_AUTH_FILE``) and
credential helpers' answers, chosen to break ``login``, ``logout`` and every command that reads them.

Each case runs in a forked child with an address-space budget and a deadline (:mod:`tests.helpers.bounded`)
and must end in one of our own errors (or succeed), never a traceback. The child gets its own environment:
``DOCKER_CONFIG``, ``REGISTRY_AUTH_FILE`` and a ``PATH`` holding only the helpers the case installs, so no
credential helper of this machine ever runs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.errors import GGUFPackError
from ggufpack.registry.auth import (
    MAX_CREDENTIALS_FILE,
    Credentials,
    find_credentials,
    remove_credentials,
    save_credentials,
)
from tests.helpers.bounded import Outcome, assert_clean, assert_refused, run_bounded
from tests.helpers.smallfs import can_mount_tmpfs, run_on_small_tmpfs

REGISTRY = "reg.example:5000"
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
BUDGET_MB = 256

HELPER = """#!/bin/sh
# a credential helper that answers "get" with what the test put in $HELPER_ANSWER
case "$1" in
    get) CAT "$HELPER_ANSWER";;
    *) CAT >/dev/null;;
esac
"""


def _inline(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def in_env(root: Path, fn: Any, *, auth_file: Path | None = None, helper_answer: bytes | None = None) -> Outcome:
    """``fn()`` in a child whose credentials live under ``root`` (``DOCKER_CONFIG=root/docker``)."""
    def child() -> Any:
        bin_dir = root / "bin"
        os.environ["PATH"] = str(bin_dir)
        os.environ["DOCKER_CONFIG"] = str(root / "docker")
        os.environ.pop("REGISTRY_AUTH_FILE", None)
        if auth_file is not None:
            os.environ["REGISTRY_AUTH_FILE"] = str(auth_file)
        if helper_answer is not None:
            os.environ["HELPER_ANSWER"] = str(root / "answer")
        return fn()

    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    if helper_answer is not None:
        (root / "answer").write_bytes(helper_answer)
        helper = bin_dir / "docker-credential-test"
        script = HELPER.replace("#!/bin/sh", f"#!{shutil.which('sh')}").replace("CAT", str(shutil.which("cat")))
        helper.write_text(script)
        helper.chmod(0o755)
    return run_bounded(child, budget_mb=BUDGET_MB, seconds=30)


def write(root: Path, content: Any) -> Path:
    path = root / "docker" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def all_operations() -> tuple[Any, ...]:
    """What login, logout and every registry command do with the files; each must end cleanly."""
    results: list[Any] = []
    for op in (lambda: find_credentials(REGISTRY), lambda: save_credentials(REGISTRY, Credentials("u", "p")),
               lambda: remove_credentials(REGISTRY), lambda: find_credentials("docker.io")):
        try:
            results.append(op())
        except GGUFPackError as e:  # any other exception ends the child: a "foreign" outcome
            results.append(type(e).__name__)
    return tuple(str(r) for r in results)


# --- item 10: malformed config.json --------------------------------------------------------------------


def test_item10_config_json_auths_list(tmp_path: Path):
    write(tmp_path, {"auths": [REGISTRY, {"auth": "x"}]})
    for op in (lambda: find_credentials(REGISTRY), lambda: save_credentials(REGISTRY, Credentials("u", "p")),
               lambda: remove_credentials(REGISTRY)):
        assert_refused(in_env(tmp_path, op), "config.json", "'auths' must be a JSON object")
    # nothing was written over the user's file
    assert json.loads((tmp_path / "docker" / "config.json").read_text()) == {"auths": [REGISTRY, {"auth": "x"}]}


def test_item10_config_json_auths_string_is_not_searched_as_text(tmp_path: Path):
    """``"auths": "reg.example:5000"`` once made ``logout`` find the registry *in the string* and crash."""
    write(tmp_path, {"auths": REGISTRY})
    assert_refused(in_env(tmp_path, lambda: remove_credentials(REGISTRY)), "'auths' must be a JSON object")


@pytest.mark.parametrize("helpers", [["test"], "test", 5])
def test_item10_config_json_cred_helpers_list(tmp_path: Path, helpers: Any):
    write(tmp_path, {"credHelpers": helpers})
    assert_refused(in_env(tmp_path, lambda: find_credentials(REGISTRY)), "'credHelpers' must be a JSON object")


@pytest.mark.parametrize("entry", [{"auth": 5}, {"auth": ["dXNlcjpwdw=="]}, {"auth": {"a": 1}},
                                   {"identitytoken": {"t": 1}}, {"username": ["u"], "password": "p"},
                                   {"username": "u", "password": 12}])
def test_item10_config_json_entry_values_not_strings(tmp_path: Path, entry: dict[str, Any]):
    write(tmp_path, {"auths": {REGISTRY: entry}})
    assert_refused(in_env(tmp_path, lambda: find_credentials(REGISTRY)), "is not a string")


@pytest.mark.parametrize("auth", ["!!!", "dXNlcjpwdw", "\x80é", "dXNl cjpwdw==",
                                  base64.b64encode(b"\xff\xfe:x").decode(), base64.b64encode(b"no-colon").decode()])
def test_item10_config_json_auth_not_base64(tmp_path: Path, auth: str):
    write(tmp_path, {"auths": {REGISTRY: {"auth": auth}}})
    assert_refused(in_env(tmp_path, lambda: find_credentials(REGISTRY)), "saved credentials for")


@pytest.mark.parametrize("store", ["../../bin/sh", "/bin/sh", "a b", "x;rm -rf ~", "", 5, ["test"], {"x": 1}])
def test_creds_store_must_name_a_helper(tmp_path: Path, store: Any):
    write(tmp_path, {"credsStore": store})
    outcome = in_env(tmp_path, lambda: find_credentials(REGISTRY))
    if store == "":  # no helper (Docker reads it so too)
        assert outcome.kind == "ok" and outcome.value is None
    else:
        assert_refused(outcome, "credential helper")


@pytest.mark.parametrize("answer", [b"[1, 2]", b"not json", b'{"Username": 5, "Secret": "s"}', b'{"Username": "u"}',
                                    pytest.param(b"[" * 100000, id="deep"), b'{"Username": "u", "Secret": ["s"]}'])
def test_helper_answers_that_are_not_its_format(tmp_path: Path, answer: bytes):
    write(tmp_path, {"credHelpers": {REGISTRY: "test"}})
    assert_refused(in_env(tmp_path, lambda: find_credentials(REGISTRY), helper_answer=answer), "not its JSON format")


def test_podman_auth_file_malformed(tmp_path: Path):
    """``$REGISTRY_AUTH_FILE`` (Podman, skopeo) is read the same way, with the same checks."""
    auth_file = tmp_path / "containers" / "auth.json"
    auth_file.parent.mkdir(parents=True)
    for content, message in ((b'{"auths": ["x"]}', "'auths' must be a JSON object"),
                             (b"[" * 100000, "nested too deeply"), (b"\xff\xfe\x00", "not valid JSON"),
                             (b"[]", "expected a JSON object")):
        auth_file.write_bytes(content)
        assert_refused(in_env(tmp_path, lambda: find_credentials(REGISTRY), auth_file=auth_file), str(auth_file),
                       message)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    assert_refused(in_env(tmp_path, lambda: find_credentials(REGISTRY), auth_file=directory), "cannot read")


def test_credentials_file_that_never_ends_is_refused_unread(tmp_path: Path):
    """``REGISTRY_AUTH_FILE=/dev/zero`` once read until memory ran out."""
    outcome = in_env(tmp_path, lambda: find_credentials(REGISTRY), auth_file=Path("/dev/zero"))
    assert_refused(outcome, f"larger than {MAX_CREDENTIALS_FILE} bytes")


def test_deeply_nested_config_json(tmp_path: Path):
    write(tmp_path, b'{"auths": ' + b"[" * 100000)
    assert_refused(in_env(tmp_path, lambda: find_credentials(REGISTRY)), "nested too deeply")


def test_a_good_file_still_works_after_all_this(tmp_path: Path):
    write(tmp_path, {"auths": {REGISTRY: _inline("alice", "pw:x")}, "credHelpers": None})
    outcome = assert_clean(in_env(tmp_path, lambda: find_credentials(REGISTRY)))
    assert outcome.value == Credentials("alice", "pw:x")


# --- ENOSPC during login -----------------------------------------------------------------------------------

ENOSPC_LOGIN = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from ggufpack.errors import DiskFullError
    from ggufpack.registry.auth import Credentials, save_credentials

    root = Path(sys.argv[1])
    os.environ["DOCKER_CONFIG"] = str(root / "docker")
    os.environ.pop("REGISTRY_AUTH_FILE", None)
    config = root / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"auths": {"old.example": {"auth": "b2xkOnB3"}}, "pad": "x" * 200}))
    before = config.read_bytes()
    filler = root / "filler"
    with filler.open("wb", buffering=0) as f:  # fill the file system to the last block
        try:
            while True:
                f.write(b"\\0" * 4096)
        except OSError:
            pass
    try:
        save_credentials("new.example", Credentials("u", "p" * 100000))
        result = {"kind": "ok"}
    except DiskFullError as e:
        result = {"kind": "disk-full", "message": str(e), "errno": getattr(e.__cause__, "errno", None)}
    except OSError as e:
        result = {"kind": "oserror", "message": str(e), "errno": e.errno}
    result["unchanged"] = config.read_bytes() == before
    result["files"] = sorted(p.name for p in config.parent.iterdir())
    print(json.dumps(result))
""")


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs unshare -rm and tmpfs mounts")
def test_enospc_during_login_leaves_the_config_as_it_was(tmp_path: Path):
    result = run_on_small_tmpfs(ENOSPC_LOGIN, "256k", tmp_path)
    assert result["kind"] == "disk-full", result
    assert "no space left on device" in result["message"] and result["errno"] == 28
    assert result["unchanged"] and result["files"] == ["config.json"]  # no temp file left behind


def test_login_file_mode_is_0600(tmp_path: Path):
    outcome = assert_clean(in_env(tmp_path, lambda: str(save_credentials(REGISTRY, Credentials("u", "p")))))
    assert stat.S_IMODE(Path(outcome.value).stat().st_mode) == 0o600


# --- property-based cases ------------------------------------------------------------------------------------

_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=16),
                    st.sampled_from(["", REGISTRY, "test", "../x", "dXNlcjpwdw==", "!!!", "\x1b[31m", "docker.io"]))
JSON = st.recursive(_LEAVES, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.sampled_from(["auths", "credHelpers", "credsStore", "auth", "username", "password", "identitytoken", REGISTRY,
                     "https://index.docker.io/v1/"]) | st.text(max_size=6), kids, max_size=5), max_leaves=25)
_AUTH = st.one_of(st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=20), _LEAVES)
_ENTRY = st.one_of(st.fixed_dictionaries({}, optional={"auth": _AUTH, "username": _LEAVES, "password": _LEAVES,
                                                        "identitytoken": _LEAVES, "email": _LEAVES}), JSON)
_SHAPED = st.fixed_dictionaries({}, optional={
    "auths": st.one_of(st.dictionaries(st.sampled_from([REGISTRY, f"https://{REGISTRY}", "docker.io", "other"]),
                                       _ENTRY, max_size=3), JSON),
    "credHelpers": st.one_of(st.dictionaries(st.sampled_from([REGISTRY, "docker.io"]),
                                             st.sampled_from(["test", "absent", "../x", ""]) | _LEAVES), JSON),
    "credsStore": st.sampled_from(["test", "absent", "", "a/b"]) | _LEAVES,
})


@FUZZ
@given(doc=st.one_of(_SHAPED, JSON))
def test_fuzz_config_json_documents(tmp_path: Path, doc: Any):
    root = tmp_path / uuid.uuid4().hex
    write(root, doc)
    assert_clean(in_env(root, all_operations, helper_answer=b'{"Username": "h", "Secret": "s"}'))


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                     st.sampled_from([b"[" * 50000, b'{"auths": {"' + REGISTRY.encode() + b'": ' + b"{" * 50000,
                                      b"\xef\xbb\xbf{}", b'{"auths": {}} trailing', b"1e400", b"9" * 5000])),
       as_auth_file=st.booleans())
def test_fuzz_credential_file_bytes(tmp_path: Path, raw: bytes, as_auth_file: bool):
    root = tmp_path / uuid.uuid4().hex
    path = write(root, raw)
    auth_file = None
    if as_auth_file:
        auth_file = root / "auth.json"
        path.rename(auth_file)
    assert_clean(in_env(root, all_operations, auth_file=auth_file))


@FUZZ
@given(answer=st.one_of(st.binary(max_size=100), JSON.map(lambda v: json.dumps(v).encode()),
                        st.fixed_dictionaries({}, optional={"Username": _LEAVES, "Secret": _LEAVES}).map(
                            lambda v: json.dumps(v).encode())))
def test_fuzz_helper_answers(tmp_path: Path, answer: bytes):
    root = tmp_path / uuid.uuid4().hex
    write(root, {"credHelpers": {REGISTRY: "test"}, "credsStore": "test"})
    assert_clean(in_env(root, all_operations, helper_answer=answer))
