"""Registry credentials, where Docker, Podman and skopeo keep them.

Read order, as those tools do: ``$REGISTRY_AUTH_FILE`` (Podman/skopeo), then
``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``). In a file, a registry's
``credHelpers`` entry wins, then the file's ``credsStore``, then the inline ``auths`` entry
(``{"auth": base64("user:password")}``). Credential helpers are the ``docker-credential-<name>``
programs, spoken to over stdin/stdout.

``login`` writes the inline form to the first of those files (created mode 0600, replaced
atomically so a crash never leaves half a file) unless the file names a ``credsStore``, in which case
the secret goes to the helper and never touches the disk in clear. Secrets are never logged: error
messages name the registry and the file, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ggufpack.errors import GGUFPackError

#: Docker Hub's historical key in ``auths``
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    """A username and a secret (password or identity token)."""

    username: str
    password: str

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"Credentials(username={self.username!r}, password=***)"

    def encoded(self) -> str:
        """``base64("user:password")``: the ``auths`` entry of a config file and a Basic header's value."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")


def config_paths() -> list[Path]:
    """The credential files to read, most specific first."""
    paths: list[Path] = []
    auth_file = os.environ.get("REGISTRY_AUTH_FILE")
    if auth_file:
        paths.append(Path(auth_file).expanduser())
    docker_dir = os.environ.get("DOCKER_CONFIG")
    paths.append((Path(docker_dir).expanduser() if docker_dir else Path.home() / ".docker") / "config.json")
    return paths


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GGUFPackError(f"cannot read the registry credentials file {path}: {e}") from e
    if not isinstance(data, dict):
        raise GGUFPackError(f"{path}: expected a JSON object")
    return data


def _keys_for(registry: str) -> tuple[str, ...]:
    """The ``auths`` keys that may hold ``registry``'s entry (Docker Hub has several spellings)."""
    keys = (registry, f"https://{registry}", f"http://{registry}")
    return (*keys, *DOCKER_HUB_KEYS) if registry in DOCKER_HUB_KEYS else keys


def _decode_inline(entry: dict[str, Any], registry: str, path: Path) -> Credentials | None:
    if entry.get("identitytoken"):
        return Credentials("<token>", str(entry["identitytoken"]))
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]))
    encoded = entry.get("auth")
    if not encoded:
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise GGUFPackError(f"{path}: the saved credentials for {registry} are not valid base64") from None
    if not sep:
        raise GGUFPackError(f"{path}: the saved credentials for {registry} are not 'user:password'")
    return Credentials(user, password)


def _helper_get(helper: str, registry: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([program, "get"], input=registry.encode(), capture_output=True, timeout=60)
    except FileNotFoundError:
        raise GGUFPackError(f"credential helper {program} (configured for {registry}) is not installed") from None
    except subprocess.TimeoutExpired:
        raise GGUFPackError(f"credential helper {program} did not answer for {registry}") from None
    if proc.returncode != 0:
        return None  # "credentials not found" is an ordinary answer
    try:
        payload = json.loads(proc.stdout)
        return Credentials(str(payload["Username"]), str(payload["Secret"]))
    except (json.JSONDecodeError, KeyError, TypeError):
        raise GGUFPackError(f"credential helper {program} gave an answer that is not its JSON format") from None


def _helper_store(helper: str, registry: str, creds: Credentials) -> None:
    program = f"docker-credential-{helper}"
    payload = json.dumps({"ServerURL": registry, "Username": creds.username, "Secret": creds.password})
    try:
        proc = subprocess.run([program, "store"], input=payload.encode(), capture_output=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        raise GGUFPackError(f"credential helper {program} is not usable") from None
    if proc.returncode != 0:
        raise GGUFPackError(f"credential helper {program} could not store the credentials for {registry}")


def _helper_erase(helper: str, registry: str) -> None:
    program = f"docker-credential-{helper}"
    try:
        subprocess.run([program, "erase"], input=registry.encode(), capture_output=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        raise GGUFPackError(f"credential helper {program} is not usable") from None


def find_credentials(registry: str) -> Credentials | None:
    """The saved credentials for ``registry`` (``host[:port]``), or None."""
    for path in config_paths():
        config = _read_config(path)
        helper = (config.get("credHelpers") or {}).get(registry) or config.get("credsStore")
        if helper:
            creds = _helper_get(str(helper), registry)
            if creds is not None:
                return creds
        auths = config.get("auths") or {}
        for key in _keys_for(registry):
            if isinstance(auths.get(key), dict):
                creds = _decode_inline(auths[key], registry, path)
                if creds is not None:
                    return creds
    return None


def _write_config(path: Path, config: dict[str, Any]) -> None:
    """Replace ``path`` atomically with mode 0600 (it holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(config, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_credentials(registry: str, creds: Credentials) -> Path:
    """Remember ``creds`` for ``registry``; returns the file that now refers to them."""
    path = config_paths()[0]
    config = _read_config(path)
    helper = (config.get("credHelpers") or {}).get(registry) or config.get("credsStore")
    auths = config.setdefault("auths", {})
    if helper:
        _helper_store(str(helper), registry, creds)
        auths[registry] = {}
    else:
        auths[registry] = {"auth": creds.encoded()}
    _write_config(path, config)
    return path


def remove_credentials(registry: str) -> bool:
    """Forget ``registry``'s credentials in every file that has them; True if any were found."""
    found = False
    for path in config_paths():
        config = _read_config(path)
        auths = config.get("auths") or {}
        keys = [k for k in _keys_for(registry) if k in auths]
        helper = (config.get("credHelpers") or {}).get(registry) or config.get("credsStore")
        if helper and _helper_get(str(helper), registry) is not None:
            _helper_erase(str(helper), registry)
            found = True
        if keys:
            for key in keys:
                del auths[key]
            _write_config(path, config)
            found = True
    return found
