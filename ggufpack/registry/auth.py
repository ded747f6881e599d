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

These files are input like any other: a file larger than :data:`MAX_CREDENTIALS_FILE` (``/dev/zero``,
say) is refused unread, ``auths`` and ``credHelpers`` must be objects, entries and helper answers
must hold strings, a helper name is a plain name (``docker-credential-NAME`` on ``PATH``, never a
path), and anything else is our error naming the file, never a traceback. A full disk during
``login`` leaves the file as it was (the temp file is removed, the ``OSError`` keeps its errno).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ggufpack.errors import GGUFPackError
from ggufpack.oci.reader import decode_json
from ggufpack.util.fsutil import atomic_write

#: Docker Hub's historical key in ``auths``
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
#: a credentials file bigger than this is not one (Docker's are a few KB): refused, never read whole
MAX_CREDENTIALS_FILE = 4 << 20
#: what may follow ``docker-credential-`` (a name looked up on PATH, never a path)
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
        with path.open("rb") as f:
            raw = f.read(MAX_CREDENTIALS_FILE + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise GGUFPackError(f"cannot read the registry credentials file {path}: {e.strerror or e}") from None
    if len(raw) > MAX_CREDENTIALS_FILE:
        raise GGUFPackError(f"cannot read the registry credentials file {path}: it is larger than "
                            f"{MAX_CREDENTIALS_FILE} bytes")
    try:
        data = decode_json(raw, "it", GGUFPackError)
    except GGUFPackError as e:
        raise GGUFPackError(f"cannot read the registry credentials file {path}: {e}") from None
    if not isinstance(data, dict):
        raise GGUFPackError(f"{path}: expected a JSON object")
    return data


def _section(config: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    """``config[key]`` (``auths``, ``credHelpers``): an object, empty when absent or null."""
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GGUFPackError(f"{path}: {key!r} must be a JSON object (registry → entry), not {type(value).__name__}")
    return value


def _helper_for(config: dict[str, Any], registry: str, path: Path) -> str | None:
    """The credential helper for ``registry``: its ``credHelpers`` entry, else the file's ``credsStore``."""
    helper = _section(config, "credHelpers", path).get(registry) or config.get("credsStore")
    if not helper:
        return None
    if not isinstance(helper, str) or not _HELPER_NAME.fullmatch(helper):
        raise GGUFPackError(f"{path}: the credential helper for {registry} must be a name (the NAME of "
                            f"docker-credential-NAME), not {helper!r:.60}")
    return helper


def _keys_for(registry: str) -> tuple[str, ...]:
    """The ``auths`` keys that may hold ``registry``'s entry (Docker Hub has several spellings)."""
    keys = (registry, f"https://{registry}", f"http://{registry}")
    return (*keys, *DOCKER_HUB_KEYS) if registry in DOCKER_HUB_KEYS else keys


def _decode_inline(entry: dict[str, Any], registry: str, path: Path) -> Credentials | None:
    def text(key: str) -> str:
        value = entry.get(key) or ""
        if not isinstance(value, str):
            raise GGUFPackError(f"{path}: the saved {key} for {registry} is not a string")
        return value

    token, username, password, encoded = (text(k) for k in ("identitytoken", "username", "password", "auth"))
    if token:
        return Credentials("<token>", token)
    if username and password:
        return Credentials(username, password)
    if not encoded:
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text
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
    except OSError as e:
        raise GGUFPackError(f"credential helper {program} cannot be run: {e.strerror or e}") from None
    if proc.returncode != 0:
        return None  # "credentials not found" is an ordinary answer
    try:
        payload = decode_json(proc.stdout, "its answer", GGUFPackError)
        username, secret = payload["Username"], payload["Secret"]
    except (GGUFPackError, KeyError, TypeError):
        username = secret = None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise GGUFPackError(f"credential helper {program} gave an answer that is not its JSON format")
    return Credentials(username, secret)


def _helper_store(helper: str, registry: str, creds: Credentials) -> None:
    program = f"docker-credential-{helper}"
    payload = json.dumps({"ServerURL": registry, "Username": creds.username, "Secret": creds.password})
    try:
        proc = subprocess.run([program, "store"], input=payload.encode(), capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        raise GGUFPackError(f"credential helper {program} is not usable") from None
    if proc.returncode != 0:
        raise GGUFPackError(f"credential helper {program} could not store the credentials for {registry}")


def _helper_erase(helper: str, registry: str) -> None:
    program = f"docker-credential-{helper}"
    try:
        subprocess.run([program, "erase"], input=registry.encode(), capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        raise GGUFPackError(f"credential helper {program} is not usable") from None


def find_credentials(registry: str) -> Credentials | None:
    """The saved credentials for ``registry`` (``host[:port]``), or None."""
    for path in config_paths():
        config = _read_config(path)
        helper = _helper_for(config, registry, path)
        if helper:
            creds = _helper_get(helper, registry)
            if creds is not None:
                return creds
        auths = _section(config, "auths", path)
        for key in _keys_for(registry):
            if isinstance(auths.get(key), dict):
                creds = _decode_inline(auths[key], registry, path)
                if creds is not None:
                    return creds
    return None


def _write_config(path: Path, config: dict[str, Any]) -> None:
    """Replace ``path`` atomically with mode 0600 (it holds secrets); a full disk leaves it as it was."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, (json.dumps(config, indent="\t") + "\n").encode(), path.parent, mode=0o600)


def save_credentials(registry: str, creds: Credentials) -> Path:
    """Remember ``creds`` for ``registry``; returns the file that now refers to them."""
    path = config_paths()[0]
    config = _read_config(path)
    helper = _helper_for(config, registry, path)
    auths = config["auths"] = _section(config, "auths", path)
    if helper:
        _helper_store(helper, registry, creds)
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
        auths = _section(config, "auths", path)
        keys = [k for k in _keys_for(registry) if k in auths]
        helper = _helper_for(config, registry, path)
        if helper and _helper_get(helper, registry) is not None:
            _helper_erase(helper, registry)
            found = True
        if keys:
            for key in keys:
                del auths[key]
            _write_config(path, config)
            found = True
    return found
