"""The OCI distribution API of one registry, over one ``requests`` session.

oras-py underneath: its auth backends run the bearer-token exchange (realm, service, scope, basic
credentials for the token endpoint). On top, what oras-py does not do and pushing multi-GB models
needs: the challenge decides the scheme (``Basic`` registries such as distribution with htpasswd get
basic auth on every request, ``Bearer`` ones a token per repository scope), chunked uploads that can
be asked where they stand and resumed, cross-repository mounts, ranged blob reads, and errors that say
what went wrong in one line (registry down, TLS, wrong password, unknown manifest) without retrying
for a minute first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from ggufpack.errors import GGUFPackError
from ggufpack.registry.auth import Credentials, find_credentials
from ggufpack.registry.settings import RegistrySettings, api_host

_REPO_IN_PATH = re.compile(r"/v2/(.+?)/(?:manifests|blobs|tags)/")
_UNSET: Any = object()
#: the largest manifest we read (distribution refuses bigger ones too): a hostile registry cannot fill memory
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
#: (connect, read) seconds; reads are per socket read, so big blobs are fine
TIMEOUT = (10.0, 120.0)
USER_AGENT = "ggufpack"

Body = bytes | Callable[[], Iterable[bytes] | bytes] | None


class RegistryError(GGUFPackError):
    """A registry refused or failed a request; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Manifest:
    """A manifest (or index) as the registry served it: exact bytes, media type and digest."""

    data: bytes
    media_type: str
    digest: str


def _error_detail(resp: requests.Response) -> str:
    """The registry's first error code and message, if its body is the distribution error JSON."""
    try:
        errors = resp.json().get("errors") or []
        first = errors[0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return resp.reason or f"HTTP {resp.status_code}"


class _TimeoutSession(requests.Session):
    """A session whose requests time out by default: oras-py's token request passes no timeout, and a
    token server that never answers must not hang a push forever."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", TIMEOUT)
        return super().request(*args, **kwargs)


class RegistryClient:
    """Requests to one registry, authenticated as its challenges ask."""

    def __init__(
        self, registry: str, settings: RegistrySettings | None = None, credentials: Credentials | None = _UNSET,
        *, pool_size: int = 8,
    ) -> None:
        self.registry = registry
        self.settings = settings or RegistrySettings()
        self.credentials = find_credentials(registry) if credentials is _UNSET else credentials
        scheme = "http" if self.settings.plain_http else "https"
        self.base = f"{scheme}://{api_host(registry)}"
        self.session = _TimeoutSession()
        if self.settings.insecure:  # asked for on purpose: urllib3's warning per request would only be noise
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._basic: str | None = None  # "Basic ..." once the registry asked for it
        self._tokens: dict[str, str] = {}  # repository → bearer token

    # --- transport -------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else urljoin(self.base + "/", path.lstrip("/"))

    def _auth_header(self, url: str) -> dict[str, str]:
        if urlsplit(url)[:2] != urlsplit(self.base)[:2]:
            return {}  # an upload Location on another host: our credentials are for this registry only
        match = _REPO_IN_PATH.search(url)
        token = self._tokens.get(match.group(1) if match else "")
        if token:
            return {"Authorization": f"Bearer {token}"}
        return {"Authorization": self._basic} if self._basic else {}

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: Body = None,
        stream: bool = False, ok: tuple[int, ...] = (200,), what: str = "",
    ) -> requests.Response:
        """One request, authenticated on a 401 challenge and retried once; a status outside ``ok`` raises.

        ``body`` is bytes or a callable that makes a fresh body, so the retry can send it again.
        """
        url = self.url(path)
        resp = self._send(method, url, headers, body, stream)
        if resp.status_code == 401:
            resp.close()
            self._authenticate(resp, url)
            resp = self._send(method, url, headers, body, stream)
            if resp.status_code == 401:
                resp.close()
                raise self._auth_failure()
        if resp.status_code not in ok:
            detail = _error_detail(resp)
            resp.close()
            shown = what or _without_query(url)
            if resp.status_code == 403:
                raise RegistryError(f"{self.registry}: access denied {shown}: {detail}", 403)
            raise RegistryError(f"{self.registry}: {method} {shown} failed: {detail}", resp.status_code)
        return resp

    def _send(self, method: str, url: str, headers: dict[str, str] | None, body: Body,
              stream: bool) -> requests.Response:
        all_headers = {**self._auth_header(url), **(headers or {})}
        data = body() if callable(body) else body
        try:
            # verify= per request: a session-level value loses to $REQUESTS_CA_BUNDLE in requests.
            return self.session.request(method, url, headers=all_headers, data=data, stream=stream,
                                        timeout=TIMEOUT, allow_redirects=True, verify=self.settings.verify)
        except requests.exceptions.SSLError as e:
            if "wrong version number" in str(e):
                raise RegistryError(
                    f"{self.registry} answers plain HTTP, not HTTPS: pass --plain-http (or set plain_http for it "
                    "in registries.json)"
                ) from None
            raise RegistryError(
                f"TLS error talking to {self.registry}: {_reason(e)}; if it uses a self-signed certificate, "
                "pass --insecure or set its ca_file in registries.json"
            ) from None
        except requests.exceptions.ConnectionError as e:
            hint = " (is it an HTTP registry? pass --plain-http)" if "wrong version number" in str(e) else ""
            raise RegistryError(f"cannot reach registry {self.registry} at {self.base}: {_reason(e)}{hint}") from None
        except requests.exceptions.Timeout:
            raise RegistryError(
                f"registry {self.registry} did not answer in time ({method} {_without_query(url)})"
            ) from None

    def _authenticate(self, resp: requests.Response, url: str) -> None:
        challenge = resp.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if self.credentials is None:
                raise RegistryError(f"{self.registry} requires a login: run 'ggufpack login {self.registry}'", 401)
            self._basic = "Basic " + self.credentials.encoded()
            return
        if scheme != "bearer":
            raise RegistryError(f"{self.registry} asks for an authentication scheme we do not speak: {scheme!r}", 401)
        token = self._bearer_token(challenge)
        match = _REPO_IN_PATH.search(url)
        self._tokens[match.group(1) if match else ""] = token

    def _bearer_token(self, challenge: str) -> str:
        import oras.auth
        from oras.auth.utils import parse_auth_header

        backend = oras.auth.get_auth_backend(
            "token", self.session, insecure=self.settings.plain_http, tls_verify=self.settings.verify
        )
        if self.credentials is not None:
            backend.set_basic_auth(self.credentials.username, self.credentials.password)
        try:
            token = backend.request_token(parse_auth_header(challenge))
        except requests.exceptions.RequestException as e:
            raise RegistryError(f"cannot get a token for {self.registry}: {_reason(e)}") from None
        if not token:
            raise self._auth_failure()
        return str(token)

    def _auth_failure(self) -> RegistryError:
        if self.credentials is None:
            return RegistryError(f"{self.registry} requires a login: run 'ggufpack login {self.registry}'", 401)
        return RegistryError(
            f"authentication to {self.registry} failed for user {self.credentials.username!r}: "
            f"wrong username or password? run 'ggufpack login {self.registry}'", 401
        )

    # --- API ---------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers and that our credentials (if any) are accepted."""
        self.request("GET", "/v2/", what="/v2/")

    def get_manifest(self, repository: str, reference: str, accept: Iterable[str]) -> Manifest:
        from ggufpack.oci.descriptor import sha256_digest
        from ggufpack.store.layout import digest_hex

        if ":" in reference:
            digest_hex(reference)  # a digest we cannot verify (sha512:...) is refused, not trusted
        resp = self.request("GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ", ".join(accept)},
                            stream=True, what=f"manifest {repository}:{reference}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        data = self._read_at_most(resp, MAX_MANIFEST_SIZE, f"manifest {repository}:{reference}")
        digest = sha256_digest(data)
        if ":" in reference and digest != reference:
            raise RegistryError(f"{self.registry}: manifest {repository}@{reference} came back with digest {digest}")
        return Manifest(data, media_type, digest)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"/v2/{repository}/manifests/{reference}", headers={"Content-Type": media_type},
                            body=data, ok=(201, 200), what=f"manifest {repository}:{reference}")
        resp.close()
        return resp.headers.get("Docker-Content-Digest", "")

    def blob_size(self, repository: str, digest: str) -> int | None:
        """The size of a blob the repository has, or None."""
        resp = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", ok=(200, 404))
        resp.close()
        if resp.status_code == 404:
            return None
        return int(resp.headers.get("Content-Length", "0"))

    def get_blob(self, repository: str, digest: str, offset: int = 0) -> requests.Response:
        """A streaming response for a blob, from ``offset`` (206 when the registry honoured the range)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return self.request("GET", f"/v2/{repository}/blobs/{digest}", headers=headers, stream=True, ok=(200, 206),
                            what=f"blob {digest[:19]}")

    def read_blob(self, repository: str, digest: str, size: int) -> bytes:
        """A small blob (a config) read whole, refused if the registry sends more than ``size`` bytes or
        bytes that do not hash to ``digest``."""
        from ggufpack.oci.descriptor import sha256_digest

        data = self._read_at_most(self.get_blob(repository, digest), size, f"blob {digest[:19]}")
        if sha256_digest(data) != digest:
            raise RegistryError(f"{self.registry}: blob {repository}@{digest} does not match its digest")
        return data

    def _read_at_most(self, resp: requests.Response, limit: int, what: str) -> bytes:
        chunks: list[bytes] = []
        total = 0
        with resp:
            try:
                for chunk in resp.iter_content(64 * 1024):
                    total += len(chunk)
                    if total > limit:
                        raise RegistryError(f"{self.registry}: {what} is larger than {limit} bytes; refused")
                    chunks.append(chunk)
            except requests.exceptions.RequestException as e:
                raise RegistryError(f"{self.registry}: reading {what} failed: {_reason(e)}") from None
        return b"".join(chunks)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository; True when it did."""
        query = urlencode({"mount": digest, "from": from_repository})
        resp = self.request("POST", f"/v2/{repository}/blobs/uploads/?{query}", ok=(201, 202))
        resp.close()
        if resp.status_code == 202:  # declined: it opened an upload instead, which we drop
            location = resp.headers.get("Location")
            if location:
                self.request("DELETE", self.url_for_location(location), ok=(204, 404, 405)).close()
            return False
        return True

    def start_upload(self, repository: str) -> str:
        """Open an upload session; returns its absolute URL."""
        resp = self.request("POST", f"/v2/{repository}/blobs/uploads/", ok=(202,))
        resp.close()
        return self.url_for_location(resp.headers["Location"])

    def upload_offset(self, location: str) -> int | None:
        """How many bytes an upload session holds (None: the session is gone)."""
        resp = self.request("GET", location, ok=(204, 404))
        resp.close()
        if resp.status_code == 404:
            return None
        end = resp.headers.get("Range", "0-0").rpartition("-")[2]
        return int(end) + 1 if resp.headers.get("Range") else 0

    def upload_chunk(self, location: str, body: Callable[[], Iterable[bytes] | bytes], offset: int,
                     length: int) -> str:
        """PATCH ``length`` bytes at ``offset``; returns the session's next URL."""
        headers = {
            "Content-Type": "application/octet-stream", "Content-Length": str(length),
            "Content-Range": f"{offset}-{offset + length - 1}",
        }
        resp = self.request("PATCH", location, headers=headers, body=body, ok=(202,), what="blob upload")
        resp.close()
        return self.url_for_location(resp.headers.get("Location", location))

    def finish_upload(self, location: str, digest: str) -> None:
        separator = "&" if "?" in location else "?"
        resp = self.request("PUT", f"{location}{separator}{urlencode({'digest': digest})}", ok=(201, 204),
                            headers={"Content-Length": "0"}, what=f"blob {digest[:19]}")
        resp.close()

    def url_for_location(self, location: str) -> str:
        """Upload ``Location`` headers may be relative to the registry."""
        return self.url(location)


def _without_query(url: str) -> str:
    """``url`` fit for a message: the query of an upload URL (``_state=...``) is a session secret."""
    return url.split("?", 1)[0]


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, without the URL soup."""
    text = re.sub(r"\?\S*", "?...", str(exc))  # no query strings: upload URLs carry session tokens
    for marker in ("Connection refused", "Name or service not known", "certificate verify failed",
                   "wrong version number", "Connection reset", "timed out", "Temporary failure in name resolution"):
        if marker in text:
            return marker.lower()
    return text.split(": ")[-1][:200] or type(exc).__name__
