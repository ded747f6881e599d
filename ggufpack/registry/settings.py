"""How to reach one registry: HTTP or HTTPS, TLS verification, and which host answers the API.

Per-registry settings live in ``<ggufpack home>/registries.json``::

    {"registries": {"127.0.0.1:5000": {"plain_http": true},
                    "models.internal:443": {"insecure": true},
                    "reg.example": {"ca_file": "/etc/ssl/reg.pem"}}}

and a command's ``--plain-http`` / ``--insecure`` flags override them for that run. ``plain_http``
speaks HTTP; ``insecure`` keeps HTTPS but skips certificate verification (like skopeo's
``--tls-verify=false``); ``ca_file`` trusts an extra certificate authority.

A loopback registry (``localhost``, ``127.0.0.0/8``, ``[::1]``) needs no ``--plain-http``: as Docker
treats ``127.0.0.0/8`` as an insecure registry, HTTPS is tried first and, when the registry answers
in plain HTTP (no TLS at all), the client speaks HTTP to it (``http_fallback``). Unlike Docker, a
certificate that fails verification stays an error there too (only ``--insecure`` skips it), and no
other registry ever falls back to HTTP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ggufpack.errors import GGUFPackError
from ggufpack.store.layout import default_root

#: Docker Hub's name in references and the host that serves its API
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class RegistrySettings:
    plain_http: bool = False
    insecure: bool = False
    ca_file: str | None = None
    #: HTTPS first, HTTP when the registry does not speak TLS at all (loopback registries only)
    http_fallback: bool = False

    @property
    def verify(self) -> bool | str:
        """What ``requests`` takes as ``verify=``."""
        if self.insecure:
            return False
        return self.ca_file or True


def settings_path() -> Path:
    return default_root() / "registries.json"


def _load() -> dict[str, Any]:
    path = settings_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or UTF-8
        raise GGUFPackError(f"cannot read {path}: {str(e)[:200]}") from None
    registries = data.get("registries") if isinstance(data, dict) else None
    if not isinstance(registries, dict):
        raise GGUFPackError(f"{path}: expected {{\"registries\": {{HOST: {{...}}}}}}")
    return registries


def settings_for(registry: str, *, plain_http: bool = False, insecure: bool = False) -> RegistrySettings:
    """The saved settings for ``registry`` with this command's flags on top (a flag only turns on)."""
    entry = _load().get(registry) or {}
    plain, insecure_saved, ca_file = (
        (entry.get("plain_http", False), entry.get("insecure", False), entry.get("ca_file"))
        if isinstance(entry, dict) else (None, None, None)
    )
    if not isinstance(plain, bool) or not isinstance(insecure_saved, bool) or not isinstance(ca_file, str | None):
        raise GGUFPackError(f"{settings_path()}: the entry for {registry} must be an object with true/false "
                            "plain_http and insecure and a ca_file path")
    saved = RegistrySettings(plain_http=plain, insecure=insecure_saved, ca_file=ca_file)
    plain = saved.plain_http or plain_http
    return replace(saved, plain_http=plain, insecure=saved.insecure or insecure,
                   http_fallback=not plain and is_loopback(registry))


def is_loopback(registry: str) -> bool:
    """Is ``registry`` (``HOST[:PORT]``) on this machine by its name alone: ``localhost``, an IPv4 address
    in ``127.0.0.0/8`` or ``[::1]`` (no name is resolved)?"""
    import ipaddress

    host = registry.rpartition("]")[0].lstrip("[") if registry.startswith("[") else registry.partition(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_host(registry: str) -> str:
    """The host that answers ``/v2/`` for a registry name (Docker Hub's differs)."""
    return DOCKER_HUB_API if registry in (DOCKER_HUB, "index.docker.io") else registry
