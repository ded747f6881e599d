"""The OCI distribution API of one registry, over one ``requests`` session.

What pushing multi-GB models to any registry needs: the challenge decides the scheme (``Basic``
registries such as distribution with htpasswd get basic auth on every request, ``Bearer`` ones a token
per repository scope, fetched from the challenge's realm), chunked uploads that can be asked where they
stand and resumed, cross-repository mounts, ranged blob reads, and errors that say what went wrong in
one line (registry down, TLS, wrong password, unknown manifest) without retrying for a minute first.

A registry is untrusted: redirects are followed here (GET and HEAD only, at most
:data:`MAX_REDIRECTS`, http and https only, every ``Location`` checked), bodies are read with caps
(:data:`~ggufpack.oci.reader.MAX_MANIFEST_BYTES` for manifests and indexes, :data:`MAX_SMALL_RESPONSE`
for error bodies and token answers), JSON is parsed by :func:`~ggufpack.oci.reader.decode_json` (and
manifests checked by :func:`manifest_document`, then by the typed reader, :mod:`ggufpack.oci.reader`),
headers we act on are parsed strictly, and whatever goes wrong ends in a :class:`RegistryError` or
another error of ours. Credentials go only where ``README.md`` ("What is sent where") says: the
registry's own origin, and the token realm it names, never to an ``http://`` realm of a registry
reached over HTTPS.
"""

from __future__ import annotations

import contextlib
import http.client
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from ggufpack.errors import GGUFPackError, printable, shown
from ggufpack.oci.reader import MAX_MANIFEST_BYTES, decode_json, is_media_type
from ggufpack.registry.auth import Credentials, find_credentials
from ggufpack.registry.settings import RegistrySettings, api_host

__all__ = ["MAX_REDIRECTS", "MAX_SMALL_RESPONSE", "CredentialsRefused", "Manifest", "RegistryClient", "RegistryError",
           "manifest_document"]

_REPO_IN_PATH = re.compile(r"/v2/(.+?)/(?:manifests|blobs|tags)/")
_UNSET: Any = object()
#: redirects followed for one request (what requests and curl allow by default)
MAX_REDIRECTS = 10
#: the most we read of a response that is not a manifest, config or blob: an error body, a token answer
MAX_SMALL_RESPONSE = 1 << 20
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)
#: (connect, read) seconds; reads are per socket read, so big blobs are fine
TIMEOUT = (10.0, 120.0)
USER_AGENT = "ggufpack"
# A challenge parameter: name=token or name="quoted \"string\"" (RFC 9110 section 11.2)
_CHALLENGE_PARAM = re.compile(r'([A-Za-z][\w.-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')
# What we put after "Bearer ": visible ASCII, as RFC 6750's b64token and every JWT are
_TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")
_DECIMAL = re.compile(r"[0-9]{1,19}")
# Errors of the transport that are the other side's doing (requests re-raises some of urllib3's as they are)
_TRANSPORT_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                     ValueError)

Body = bytes | Callable[[], Iterable[bytes] | bytes] | None
AuthFor = Callable[[str], dict[str, str]]


class RegistryError(GGUFPackError):
    """A registry refused or failed a request; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class CredentialsRefused(RegistryError):
    """The registry (or its token server) refused the credentials we sent (401/403 with credentials)."""


@dataclass(frozen=True)
class Manifest:
    """A manifest (or index) as the registry served it: exact bytes, media type and digest."""

    data: bytes
    media_type: str
    digest: str


def manifest_document(data: bytes, name: str) -> dict[str, Any]:
    """A manifest or index as a registry serves it (or as a pull stored it): a JSON object with
    ``schemaVersion`` 2 and, if any, a real media type. Its descriptors are the typed reader's to check
    (:class:`~ggufpack.oci.reader.ImageManifest`, :func:`~ggufpack.oci.reader.parse_index`)."""
    parsed = decode_json(data, f"{name}: the registry's manifest")
    version = parsed.get("schemaVersion") if isinstance(parsed, dict) else None
    if type(version) is not int or version != 2:
        raise GGUFPackError(f"{name}: unsupported manifest (schema version {shown(version)})")
    if "mediaType" in parsed and not is_media_type(parsed["mediaType"]):
        raise GGUFPackError(f"{name}: the manifest's mediaType {shown(parsed['mediaType'])} is not a media type")
    return parsed


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def checked_url(url: str, what: str) -> str:
    """``url`` if it is an absolute http(s) URL we can send a request to; else our error naming ``what``."""
    label = printable(_without_query(url), 120)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        raise RegistryError(f"{what}: {label!r} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        reason = f"the {scheme}:// scheme is refused" if scheme else "it is not an absolute URL"
        raise RegistryError(f"{what}: {label!r}: {reason} (only http:// and https:// are followed)")
    if not parts.hostname or any(c.isspace() or not c.isprintable() for c in url):
        raise RegistryError(f"{what}: {label!r} is not a valid URL")
    return url


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """The scheme (lower case) and parameters (names lower case) of a ``WWW-Authenticate`` header."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        value = re.sub(r"\\(.)", r"\1", m.group(2)) if m.group(2) is not None else m.group(3)
        params.setdefault(m.group(1).lower(), value)
    return scheme.lower(), params


def header_int(resp: requests.Response, name: str, what: str) -> int | None:
    """A header that must be a decimal number of bytes, or None when absent; anything else is our error."""
    value = resp.headers.get(name)
    if value is None:
        return None
    if not _DECIMAL.fullmatch(value.strip()):
        raise RegistryError(f"{what}: the registry's {name} header {shown(value)} is not a number of bytes")
    return int(value)


def _limited_body(resp: requests.Response, limit: int) -> bytes | None:
    """The body if it is at most ``limit`` bytes, else None (read no further); closes ``resp``.
    Transport errors propagate."""
    chunks: list[bytes] = []
    total = 0
    with resp:
        for chunk in resp.iter_content(64 * 1024):
            total += len(chunk)
            if total > limit:
                return None
            chunks.append(chunk)
    return b"".join(chunks)


def _bounded_body(resp: requests.Response, limit: int) -> bytes | None:
    """At most ``limit`` bytes of a body, or None when it is longer or cannot be read; closes ``resp``."""
    try:
        return _limited_body(resp, limit)
    except _TRANSPORT_ERRORS:
        return None


def _error_detail(resp: requests.Response) -> str:
    """The registry's first error code and message, if its body is the distribution error JSON."""
    fallback = printable(resp.reason or "", 200) or f"HTTP {resp.status_code}"
    body = _bounded_body(resp, 64 * 1024)
    try:
        first = decode_json(body, "error", GGUFPackError)["errors"][0] if body else None
    except (GGUFPackError, TypeError, KeyError, IndexError):
        first = None
    if not isinstance(first, dict):
        return fallback
    detail = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    return printable(detail, 300) or fallback


class _Session(requests.Session):
    """A session whose requests time out by default, so that no request can hang a push forever, and
    that leaves redirects to :meth:`RegistryClient._send` (requests would parse a ``Location`` even with
    ``allow_redirects=False``, failing the request on a bad one before we see the answer)."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", TIMEOUT)
        return super().request(*args, **kwargs)

    def get_redirect_target(self, resp: requests.Response) -> None:  # type: ignore[override]
        return None


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
        #: the HTTPS origin that may turn out to speak plain HTTP (loopback registries only)
        self._https_origin = _origin(self.base) if self.settings.http_fallback and scheme == "https" else None
        self.session = _Session()
        if self.settings.insecure:  # asked for on purpose: urllib3's warning per request would only be noise
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
        if _origin(url) != _origin(self.base):
            return {}  # a redirect or an upload Location on another host: our credentials are for this registry only
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

        ``body`` is bytes or a callable that makes a fresh body, so the retry can send it again. Without
        ``stream`` the body of the answer is read (at most :data:`MAX_SMALL_RESPONSE` of it) and dropped:
        such callers use the status and the headers only.
        """
        url = checked_url(self.url(path), f"{self.registry}: {method}")
        resp = self._send(method, url, headers, body)
        if resp.status_code == 401:
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            self._authenticate(challenge, url)
            resp = self._send(method, url, headers, body)
            if resp.status_code == 401:
                resp.close()
                raise self._auth_failure()
        if resp.status_code not in ok:
            detail = _error_detail(resp)
            label = what or _without_query(url)
            if resp.status_code == 403:
                raise RegistryError(f"{self.registry}: access denied {label}: {detail}", 403)
            raise RegistryError(f"{self.registry}: {method} {label} failed: {detail}", resp.status_code)
        if not stream:
            _bounded_body(resp, MAX_SMALL_RESPONSE)  # lets the connection be reused when the body is small
        return resp

    def _send(self, method: str, url: str, headers: dict[str, str] | None, body: Body,
              auth_for: AuthFor | None = None) -> requests.Response:
        """``method url``, following redirects (GET and HEAD only) to checked http(s) URLs; each hop gets
        the credentials ``auth_for`` gives its URL (default: ours, on this registry's origin only)."""
        auth_for = auth_for or self._auth_header
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            url = self._after_fallback(url)
            resp = self._send_once(method, url, {**auth_for(url), **(headers or {})}, body)
            if resp.status_code not in _REDIRECT_STATUSES or method not in ("GET", "HEAD"):
                return resp
            location = resp.headers.get("Location")
            resp.close()
            what = f"{self.registry}: {method} {_without_query(first)} redirected"
            if not location:
                raise RegistryError(f"{what} without a Location")
            try:
                target = urljoin(url, location)
            except ValueError:
                target = location  # refused just below, with the Location as it came
            url = checked_url(target, what)
        raise RegistryError(f"{self.registry}: {method} {_without_query(first)}: more than {MAX_REDIRECTS} redirects "
                            "(a redirect loop?)")

    def _send_once(self, method: str, url: str, headers: dict[str, str], body: Body) -> requests.Response:
        data = body() if callable(body) else body
        try:
            # verify= per request: a session-level value loses to $REQUESTS_CA_BUNDLE in requests.
            return self.session.request(method, url, headers=headers, data=data, stream=True, timeout=TIMEOUT,
                                        allow_redirects=False, verify=self.settings.verify)
        except (requests.exceptions.SSLError, requests.exceptions.ConnectionError) as e:
            if "wrong version number" in str(e) and self._fall_back_to_http(url):
                return self._send_once(method, "http://" + url.split("://", 1)[1], headers, body)
            if not isinstance(e, requests.exceptions.SSLError):
                hint = " (is it an HTTP registry? pass --plain-http)" if "wrong version number" in str(e) else ""
                raise RegistryError(f"cannot reach registry {self.registry} at {self.base}: {_reason(e)}{hint}") \
                    from None
            if "wrong version number" in str(e):
                raise RegistryError(
                    f"{self.registry} answers plain HTTP, not HTTPS: pass --plain-http (or set plain_http for it "
                    "in registries.json)"
                ) from None
            raise RegistryError(
                f"TLS error talking to {self.registry}: {_reason(e)}; if it uses a self-signed certificate, "
                "pass --insecure or set its ca_file in registries.json"
            ) from None
        except requests.exceptions.Timeout:
            raise RegistryError(
                f"registry {self.registry} did not answer in time ({method} {_without_query(url)})"
            ) from None
        except _TRANSPORT_ERRORS as e:
            raise RegistryError(f"{self.registry}: {method} {_without_query(url)} failed: {_reason(e)}") from None

    def _after_fallback(self, url: str) -> str:
        """``url`` over HTTP once this client fell back to it: a URL made before (the retry after a 401
        challenge, an upload Location) must not go over HTTPS again, nor lose its credentials, which
        belong to :attr:`base`'s origin."""
        if self._https_origin is not None and self.base.startswith("http://") and _origin(url) == self._https_origin:
            return "http://" + url.split("://", 1)[1]
        return url

    def _fall_back_to_http(self, url: str) -> bool:
        """A loopback registry answered a TLS handshake in plain HTTP: from now on this client speaks HTTP to
        it, as Docker does with an insecure registry (see :mod:`~ggufpack.registry.settings`)."""
        if self._https_origin is None or _origin(url) != self._https_origin:
            return False
        # idempotent: requests of other threads may have started over HTTPS before the first one fell back
        self.base = f"http://{self._https_origin[1]}"
        self.settings = replace(self.settings, plain_http=True, http_fallback=False)
        return True

    def _authenticate(self, challenge: str, url: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.credentials is None:
                raise RegistryError(f"{self.registry} requires a login: run 'ggufpack login {self.registry}'", 401)
            self._basic = "Basic " + self.credentials.encoded()
            return
        if scheme != "bearer":
            raise RegistryError(
                f"{self.registry} asks for an authentication scheme we do not speak: {shown(scheme)}", 401)
        token = self._bearer_token(params)
        match = _REPO_IN_PATH.search(url)
        self._tokens[match.group(1) if match else ""] = token

    def _bearer_token(self, params: dict[str, str]) -> str:
        """A token from the challenge's realm (the token server), with our credentials if we have some."""
        what = f"{self.registry}: the token server (realm) of its challenge"
        if not params.get("realm"):
            raise RegistryError(f"{self.registry} asks for a bearer token but its challenge names no realm "
                                "(the token server to ask)", 401)
        realm = checked_url(params["realm"], what)
        if self.credentials is not None and _origin(realm)[0] == "http" and not self.settings.plain_http:
            raise RegistryError(
                f"{self.registry} is reached over HTTPS but sends us for a token to {_origin(realm)[1]} over plain "
                "HTTP; ggufpack does not send credentials over plain HTTP for an HTTPS registry. Ask its operator "
                "for an https:// realm, or set plain_http for the registry if the whole exchange is meant to be HTTP",
                401,
            )
        query = urlencode({k: params[k] for k in ("service", "scope") if params.get(k)})
        url = f"{realm}{'&' if '?' in realm else '?'}{query}" if query else realm
        basic = {"Authorization": "Basic " + self.credentials.encoded()} if self.credentials is not None else {}
        realm_origin = _origin(realm)
        try:
            resp = self._send("GET", url, {"Accept": "application/json"}, None,
                              auth_for=lambda hop: basic if _origin(hop) == realm_origin else {})
        except RegistryError as e:
            raise RegistryError(f"cannot get a token for {self.registry} from {realm_origin[1]}: {e}") from None
        if resp.status_code in (401, 403):
            resp.close()
            raise self._auth_failure()
        if resp.status_code != 200:
            raise RegistryError(f"{what} answered {resp.status_code}: {_error_detail(resp)}", resp.status_code)
        data = self._read_at_most(resp, MAX_SMALL_RESPONSE, "the token server's answer")
        answer = decode_json(data, f"{self.registry}: the token server's answer", GGUFPackError)
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            shape = "holds no usable token" if isinstance(answer, dict) else "is not a JSON object"
            raise RegistryError(f"{self.registry}: the token server's answer {shape}")
        return token

    def _auth_failure(self) -> RegistryError:
        if self.credentials is None:
            return RegistryError(f"{self.registry} requires a login: run 'ggufpack login {self.registry}'", 401)
        return CredentialsRefused(
            f"authentication to {self.registry} failed for user {self.credentials.username!r}: "
            f"wrong username or password? run 'ggufpack login {self.registry}'", 401
        )

    # --- API ---------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers and that our credentials (if any) are accepted."""
        self.request("GET", "/v2/", what="/v2/").close()

    def get_manifest(self, repository: str, reference: str, accept: Iterable[str]) -> Manifest:
        from ggufpack.oci.descriptor import sha256_digest
        from ggufpack.store.layout import digest_hex

        if ":" in reference:
            digest_hex(reference)  # a digest we cannot verify (sha512:...) is refused, not trusted
        resp = self.request("GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ", ".join(accept)},
                            stream=True, what=f"manifest {_named(repository, reference)}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        data = self._read_at_most(resp, MAX_MANIFEST_BYTES, f"manifest {_named(repository, reference)}")
        digest = sha256_digest(data)
        if ":" in reference and digest != reference:
            raise RegistryError(f"{self.registry}: manifest {repository}@{reference} came back with digest {digest}")
        return Manifest(data, media_type, digest)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"/v2/{repository}/manifests/{reference}", headers={"Content-Type": media_type},
                            body=data, ok=(201, 200), what=f"manifest {_named(repository, reference)}")
        return resp.headers.get("Docker-Content-Digest", "")

    def blob_size(self, repository: str, digest: str) -> int | None:
        """The size of a blob the repository has, or None."""
        resp = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", ok=(200, 404))
        if resp.status_code == 404:
            return None
        return header_int(resp, "Content-Length", f"{self.registry}: HEAD blob {digest[:19]}") or 0

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
        try:
            data = _limited_body(resp, limit)
        except _TRANSPORT_ERRORS as e:
            raise RegistryError(f"{self.registry}: reading {what} failed: {_reason(e)}") from None
        if data is None:
            raise RegistryError(f"{self.registry}: {what} is larger than {limit} bytes; refused")
        return data

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository; True when it did."""
        query = urlencode({"mount": digest, "from": from_repository})
        resp = self.request("POST", f"/v2/{repository}/blobs/uploads/?{query}", ok=(201, 202))
        if resp.status_code == 202:  # declined: it opened an upload instead, which we drop (best effort)
            location = resp.headers.get("Location")
            if location:
                with contextlib.suppress(RegistryError):  # else an upload session we leave to expire
                    self.request("DELETE", self.url_for_location(location), ok=(204, 404, 405))
            return False
        return True

    def start_upload(self, repository: str) -> str:
        """Open an upload session; returns its absolute URL."""
        resp = self.request("POST", f"/v2/{repository}/blobs/uploads/", ok=(202,), what=f"blob upload to {repository}")
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.registry}: the registry opened an upload to {repository} (202) but gave no "
                                "Location to send it to")
        return self.url_for_location(location)

    def upload_offset(self, location: str) -> int | None:
        """How many bytes an upload session holds (None: the session is gone)."""
        resp = self.request("GET", location, ok=(204, 404))
        if resp.status_code == 404:
            return None
        value = resp.headers.get("Range")
        if value is None:
            return 0
        match = re.fullmatch(r"(?:bytes=)?0-([0-9]{1,19})", value.strip())
        if not match:
            raise RegistryError(f"{self.registry}: the upload's Range header {shown(value)} is not 0-END")
        return int(match.group(1)) + 1

    def upload_chunk(self, location: str, body: Callable[[], Iterable[bytes] | bytes], offset: int,
                     length: int) -> str:
        """PATCH ``length`` bytes at ``offset``; returns the session's next URL."""
        headers = {
            "Content-Type": "application/octet-stream", "Content-Length": str(length),
            "Content-Range": f"{offset}-{offset + length - 1}",
        }
        resp = self.request("PATCH", location, headers=headers, body=body, ok=(202,), what="blob upload")
        return self.url_for_location(resp.headers.get("Location") or location)

    def finish_upload(self, location: str, digest: str) -> None:
        separator = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{separator}{urlencode({'digest': digest})}", ok=(201, 204),
                     headers={"Content-Length": "0"}, what=f"blob {digest[:19]}")

    def url_for_location(self, location: str) -> str:
        """An upload ``Location``, absolute or relative to the registry, checked (http or https, a real URL)."""
        return checked_url(self.url(location), f"{self.registry}: upload Location")


def _named(repository: str, reference: str) -> str:
    """``repository:tag`` or ``repository@sha256:...``, as a reference is written."""
    return f"{repository}@{reference}" if ":" in reference else f"{repository}:{reference}"


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
    return printable(text.split(": ")[-1], 200) or type(exc).__name__
