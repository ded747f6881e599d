"""Where credentials come from and go to: Docker's and Podman's files and credential helpers.

The credential helper is a real ``docker-credential-<name>`` program on ``PATH`` (a small shell
script speaking the helper protocol over stdin/stdout and keeping its secrets in a file), which is
exactly how Docker talks to ``pass``, ``secretservice`` or ``osxkeychain``.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from ggufpack.errors import GGUFPackError
from ggufpack.registry.auth import Credentials, find_credentials, remove_credentials, save_credentials

HELPER = """#!/usr/bin/env python3
# A docker credential helper keeping one JSON file per server in $HELPER_STORE.
import json, os, pathlib, sys

store = pathlib.Path(os.environ["HELPER_STORE"])
store.mkdir(exist_ok=True)
action = sys.argv[1]
if action == "store":
    entry = json.load(sys.stdin)
    (store / entry["ServerURL"].replace("/", "_").replace(":", "_")).write_text(json.dumps(entry))
else:
    path = store / sys.stdin.readline().strip().replace("/", "_").replace(":", "_")
    if action == "get":
        if not path.exists():
            print("credentials not found in native keychain")
            sys.exit(1)
        print(path.read_text())
    elif action == "erase":
        path.unlink(missing_ok=True)
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated DOCKER_CONFIG and a credential helper named ``test`` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-test"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HELPER_STORE", str(tmp_path / "helper-store"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    return tmp_path


def write_config(path: Path, config: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))


def inline(user: str, password: str) -> dict:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_inline_auths_and_url_spellings(env: Path):
    write_config(env / "docker" / "config.json", {"auths": {
        "reg.example:5000": inline("alice", "pw:with:colons"), "https://other.example": inline("bob", "x"),
    }})
    assert find_credentials("reg.example:5000") == Credentials("alice", "pw:with:colons")
    assert find_credentials("other.example") == Credentials("bob", "x")
    assert find_credentials("nowhere.example") is None


def test_registry_auth_file_wins_over_docker_config(env: Path, monkeypatch: pytest.MonkeyPatch):
    write_config(env / "docker" / "config.json", {"auths": {"reg.example": inline("docker", "1")}})
    write_config(env / "podman-auth.json", {"auths": {"reg.example": inline("podman", "2")}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(env / "podman-auth.json"))
    assert find_credentials("reg.example") == Credentials("podman", "2")


def test_cred_helper_per_registry_and_creds_store(env: Path):
    write_config(env / "docker" / "config.json", {"credHelpers": {"reg.example": "test"}, "auths": {}})
    save_credentials("reg.example", Credentials("carol", "s3cret"))
    config = json.loads((env / "docker" / "config.json").read_text())
    assert config["auths"]["reg.example"] == {}  # the secret went to the helper, not the file
    assert "s3cret" not in (env / "docker" / "config.json").read_text()
    assert find_credentials("reg.example") == Credentials("carol", "s3cret")
    assert remove_credentials("reg.example")
    assert find_credentials("reg.example") is None


def test_login_file_is_0600_and_replaced_atomically(env: Path):
    save_credentials("reg.example", Credentials("dave", "pw"))
    path = env / "docker" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert find_credentials("reg.example") == Credentials("dave", "pw")
    save_credentials("other.example", Credentials("erin", "pw2"))
    assert set(json.loads(path.read_text())["auths"]) == {"reg.example", "other.example"}
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left


def test_missing_helper_and_corrupt_file_are_clear_errors(env: Path):
    write_config(env / "docker" / "config.json", {"credsStore": "absent"})
    with pytest.raises(GGUFPackError, match=r"docker-credential-absent.*not installed"):
        find_credentials("reg.example")
    (env / "docker" / "config.json").write_text("{not json")
    with pytest.raises(GGUFPackError, match="cannot read the registry credentials file"):
        find_credentials("reg.example")
    write_config(env / "docker" / "config.json", {"auths": {"reg.example": {"auth": "!!!"}}})
    with pytest.raises(GGUFPackError, match="not valid base64"):
        find_credentials("reg.example")


def test_secrets_stay_out_of_reprs():
    assert "hunter2" not in repr(Credentials("frank", "hunter2"))
