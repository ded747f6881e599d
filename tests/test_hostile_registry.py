"""A hostile registry: manifests, indexes, descriptors, redirects, headers and token servers chosen to break
``pull``, ``push``, ``login`` and remote ``inspect``.

Every case runs against a real loopback server (:class:`tests.helpers.hostileregistry.HostileRegistry`,
HTTP or TLS) in a forked child with an address-space budget and a deadline
(:mod:`tests.helpers.bounded`), and must end in one of our own errors (or succeed), never a
traceback, never unbounded memory or time. The ``test_itemNN_*`` cases are the defects issue 12 found;
the property-based ones go beyond them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.oci import mediatypes as mt
from ggufpack.oci.descriptor import Descriptor
from ggufpack.oci.reader import MAX_CONFIG_BYTES
from ggufpack.progress import QUIET
from ggufpack.refs import parse_reference
from ggufpack.registry.auth import Credentials
from ggufpack.registry.client import MAX_REDIRECTS, MAX_SMALL_RESPONSE, RegistryClient
from ggufpack.registry.download import fetch_blob
from ggufpack.registry.known_blobs import KnownBlobs
from ggufpack.registry.pull import inspect_remote, pull_image
from ggufpack.registry.push import Pusher, _UploadState
from ggufpack.registry.settings import RegistrySettings
from ggufpack.store import Store
from tests.helpers.bounded import Outcome, assert_clean, assert_refused, run_bounded
from tests.helpers.builds import run_cli
from tests.helpers.hostileregistry import Answer, HostileRegistry, Seen, digest_of
from tests.helpers.smallfs import can_mount_tmpfs, run_on_small_tmpfs

REPO = "r"
USER, PASSWORD = "alice", "s3cret-pw"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
BUDGET_MB = 384
SECONDS = 60.0


def tar_layer(name: str = "hello.txt", data: bytes = b"hello\n") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_for(layers: list[bytes]) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": [digest_of(la) for la in layers]}}).encode()


def desc(data: bytes, media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


def publish(reg: HostileRegistry, tag: str = "1", layers: list[bytes] | None = None,
            edit: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """Serve an image (its config and layers as blobs) under ``tag``; ``edit`` may change the manifest first."""
    layers = [tar_layer()] if layers is None else layers
    config = config_for(layers)
    for blob in (config, *layers):
        reg.blob(REPO, blob)
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": desc(config, mt.OCI_CONFIG),
                                "layers": [desc(la, mt.OCI_LAYER_TAR) for la in layers]}
    if edit is not None:
        manifest = edit(manifest) or manifest
    reg.manifest(REPO, tag, manifest)
    return manifest


def do_pull(home: Path, host: str, settings_: Any, tag: str = "1", creds: Credentials | None = None) -> str:
    store = Store(home)
    result = pull_image(store, parse_reference(f"{host}/{REPO}:{tag}"), RegistryClient(host, settings_, creds),
                        platform="linux/amd64")
    return result.digest


def pull_bounded(reg: HostileRegistry, home: Path, tag: str = "1", creds: Credentials | None = None) -> Outcome:
    return run_bounded(do_pull, home, reg.host, reg.settings, tag, creds, budget_mb=BUDGET_MB, seconds=SECONDS)


def client_call(reg: HostileRegistry, method: str, *args: Any, creds: Credentials | None = None) -> Outcome:
    def call() -> Any:
        return getattr(RegistryClient(reg.host, reg.settings, creds), method)(*args)

    return run_bounded(call, budget_mb=BUDGET_MB, seconds=SECONDS)


def refs(home: Path) -> list[str]:
    return sorted(ref for image in Store(home).images() for ref in image.refs) if home.exists() else []


@pytest.fixture
def reg() -> Iterator[HostileRegistry]:
    with HostileRegistry() as server:
        yield server


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


# --- item 10: uncaught exceptions -------------------------------------------------------------------


def _blob_path(manifest: dict[str, Any], index: int = 0) -> str:
    return f"/v2/{REPO}/blobs/{manifest['layers'][index]['digest']}"


def test_item10_redirect_loop_is_a_clear_error(reg: HostileRegistry, home: Path):
    manifest = publish(reg)
    reg.set("GET", _blob_path(manifest), Answer(302, [("Location", _blob_path(manifest))]))
    assert_refused(pull_bounded(reg, home), f"more than {MAX_REDIRECTS} redirects")
    assert refs(home) == []
    assert sum(1 for r in reg.requests if r.path == _blob_path(manifest)) == MAX_REDIRECTS + 1


def test_item10_blob_redirect_to_file_scheme_refused(reg: HostileRegistry, home: Path):
    """Also item 13: the message says the scheme is refused, not that there were too many redirects."""
    manifest = publish(reg)
    reg.set("GET", _blob_path(manifest), Answer(307, [("Location", "file:///etc/passwd")]))
    outcome = assert_refused(pull_bounded(reg, home), "file://", "scheme is refused")
    assert "redirects" not in outcome.message
    assert refs(home) == []


@pytest.mark.parametrize("location", ["http://[::1", "http://127.0.0.1:99999/x", "http://:80/no-host", "", "ftp://x/y",
                                      "http://127.0.0.1/a b", "javascript:alert(1)"])
def test_item10_bad_location_is_a_clear_error(reg: HostileRegistry, home: Path, location: str):
    manifest = publish(reg)
    reg.set("GET", _blob_path(manifest), Answer(302, [("Location", location)]))
    assert_refused(pull_bounded(reg, home), "redirected")
    # the same Location on an upload session
    reg.set("POST", f"/v2/{REPO}/blobs/uploads/", Answer(202, [("Location", location)]))
    if location:
        assert_refused(client_call(reg, "start_upload", REPO), "upload Location")


def _raw_manifest(reg: HostileRegistry, tag: str, size_text: str) -> None:
    """A manifest whose layer size is written as ``size_text`` (JSON that json.dumps never writes)."""
    manifest = publish(reg, tag)
    text = json.dumps(manifest).replace(f'"size": {manifest["layers"][0]["size"]}', f'"size": {size_text}', 1)
    reg.manifest(REPO, tag, text.encode())


def test_item10_layer_size_1e400_refused(reg: HostileRegistry, home: Path):
    _raw_manifest(reg, "1", "1e400")
    assert_refused(pull_bounded(reg, home), "malformed descriptor", "size")
    assert not any("/blobs/" in r.path for r in reg.requests)  # refused before any download


@pytest.mark.parametrize("size_text", ["1.5", "-1", "true", '"12"', "null", str(1 << 60), "1e20", "NaN",
                                       "Infinity", "[]", pytest.param("9" * 5000, id="5000-digits")])
def test_descriptor_sizes_are_whole_numbers_in_range(reg: HostileRegistry, home: Path, size_text: str):
    _raw_manifest(reg, "1", size_text)
    assert_refused(pull_bounded(reg, home))
    assert not any("/blobs/" in r.path for r in reg.requests)


@pytest.mark.parametrize("entries", [[1], ["x"], [None], [[{"digest": "sha256:" + "0" * 64}]], "not-a-list",
                                     [{"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1,
                                       "platform": "linux/amd64"}]])
def test_item10_index_entries_not_objects(reg: HostileRegistry, home: Path, entries: Any):
    reg.manifest(REPO, "1", {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}, mt.OCI_INDEX)
    assert_refused(pull_bounded(reg, home), "index")
    assert refs(home) == []


def _challenge(reg: HostileRegistry, header: str) -> None:
    def answer(seen: Seen) -> Answer:
        if seen.headers.get("Authorization", "").startswith("Bearer "):
            return Answer(200)
        return Answer(401, [("WWW-Authenticate", header)])

    reg.set("GET", "/v2/", answer)


@pytest.mark.parametrize("creds", [None, Credentials(USER, PASSWORD)])
def test_item10_bearer_without_realm(reg: HostileRegistry, creds: Credentials | None):
    _challenge(reg, 'Bearer service="registry",scope="repository:r:pull"')
    assert_refused(client_call(reg, "ping", creds=creds), "names no realm")


@pytest.mark.parametrize(("body", "message"), [(b"[1, 2]", "not a JSON object"), (b"<html>", "not valid JSON"),
                                               (b'{"token": 5}', "no usable token"), (b"{}", "no usable token"),
                                               (b'{"token": "a\\r\\nX-Injected: 1"}', "no usable token"),
                                               pytest.param(b"[" * 100000, "nested too deeply", id="deep")])
def test_item10_token_endpoint_returns_list(reg: HostileRegistry, body: bytes, message: str):
    with HostileRegistry() as tokens:
        tokens.set("GET", "/token", Answer(200, [("Content-Type", "application/json")], body))
        _challenge(reg, f'Bearer realm="{tokens.url}/token",service="registry"')
        assert_refused(client_call(reg, "ping", creds=Credentials(USER, PASSWORD)), message)


def test_token_answer_larger_than_the_cap_is_refused_unread(reg: HostileRegistry):
    with HostileRegistry() as tokens:
        tokens.set("GET", "/token", Answer(200, [], b'{"token": "', stream=1 << 30, fill=b"a"))
        _challenge(reg, f'Bearer realm="{tokens.url}/token"')
        assert_refused(client_call(reg, "ping"), f"larger than {MAX_SMALL_RESPONSE}")


@pytest.mark.parametrize("realm", ["ftp://127.0.0.1/token", "/token", "token.example/token", "http://[::1/t"])
def test_realm_that_is_not_an_http_url_is_refused(reg: HostileRegistry, realm: str):
    _challenge(reg, f'Bearer realm="{realm}"')
    assert_refused(client_call(reg, "ping", creds=Credentials(USER, PASSWORD)), "token server")


def test_item10_202_without_location(reg: HostileRegistry, tmp_path: Path):
    reg.set("POST", f"/v2/{REPO}/blobs/uploads/", Answer(202))
    assert_refused(client_call(reg, "start_upload", REPO), "no Location")

    def push_one() -> None:
        store = Store(tmp_path / "push-home")
        digest, size = store.put_bytes(b"a blob to push")
        with QUIET.bar("push", size) as bar:
            Pusher(store, RegistryClient(reg.host, reg.settings, None), REPO).push_blob(
                Descriptor(mt.OCI_LAYER_TAR, digest, size), bar)

    assert_refused(run_bounded(push_one, budget_mb=BUDGET_MB, seconds=SECONDS), "no Location")


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "0x10", "1, 2", "99999999999999999999999"])
def test_item10_head_content_length_not_a_number(reg: HostileRegistry, value: str):
    digest = digest_of(b"x")
    reg.set("HEAD", f"/v2/{REPO}/blobs/{digest}", Answer(200, length=value))
    assert_refused(client_call(reg, "blob_size", REPO, digest), "Content-Length")


@pytest.mark.parametrize("value", ["0-abc", "bytes=", "-5", "0-", "5-10", "0-1e3"])
def test_upload_range_header_not_a_range(reg: HostileRegistry, value: str):
    reg.set("GET", f"/v2/{REPO}/blobs/uploads/u1", Answer(204, [("Range", value)]))
    assert_refused(client_call(reg, "upload_offset", f"{reg.url}/v2/{REPO}/blobs/uploads/u1"), "Range")


def test_manifest_nested_too_deeply(reg: HostileRegistry, home: Path):
    reg.manifest(REPO, "1", b"[" * 200000 + b"]" * 200000)
    assert_refused(pull_bounded(reg, home), "nested too deeply")


def test_error_bodies_are_read_with_a_cap(reg: HostileRegistry):
    """A 500 whose body never ends: the error comes at once, with the status, not after reading gigabytes."""
    reg.set("GET", "/v2/", Answer(500, [("Content-Type", "application/json")], b'{"errors": [', stream=4 << 30))
    reg.set("PUT", f"/v2/{REPO}/manifests/1", Answer(201, [], stream=4 << 30))
    assert_refused(client_call(reg, "ping"), "failed")
    assert_clean(client_call(reg, "put_manifest", REPO, "1", b"{}", mt.OCI_MANIFEST), allow_ok=True)


def test_registry_error_messages_carry_no_terminal_escapes(reg: HostileRegistry):
    message = json.dumps({"errors": [{"code": "DENIED", "message": "\x1b]0;owned\x07\x1b[2J" + "x" * 5000}]})
    reg.set("GET", "/v2/", Answer(500, [], message.encode()))
    outcome = assert_refused(client_call(reg, "ping"), "DENIED")
    assert "\x1b" not in outcome.message and len(outcome.message) < 1000


# --- item 11: configs and manifests of any size ---------------------------------------------------


def test_item11_pull_caps_config_size(reg: HostileRegistry, home: Path):
    big = MAX_CONFIG_BYTES + 1

    def oversized(manifest: dict[str, Any]) -> None:
        manifest["config"] = {"mediaType": mt.OCI_CONFIG, "digest": digest_of(b"?"), "size": big}

    manifest = publish(reg, edit=oversized)
    config_path = f"/v2/{REPO}/blobs/{manifest['config']['digest']}"
    reg.set("GET", config_path, Answer(200, [], stream=big))
    assert_refused(pull_bounded(reg, home), "config", f"more than the {MAX_CONFIG_BYTES}")
    assert not any(r.path == config_path for r in reg.requests)  # refused before a byte of it came
    assert refs(home) == []
    # remote inspect follows the same rule: it reads the manifest, not the config
    remote = run_bounded(lambda: inspect_remote(RegistryClient(reg.host, reg.settings, None),
                                                parse_reference(f"{reg.host}/{REPO}:1"), "linux/amd64").config)
    assert assert_clean(remote).value == {}
    assert not any(r.path == config_path for r in reg.requests)


def test_item11_manifest_larger_than_the_cap_is_refused(reg: HostileRegistry, home: Path):
    reg.set("GET", f"/v2/{REPO}/manifests/1", Answer(200, [("Content-Type", mt.OCI_MANIFEST)], b"{", stream=1 << 30,
                                                      fill=b" "))
    assert_refused(pull_bounded(reg, home), "larger than")


# --- item 13: messages that say what happened -------------------------------------------------------


@pytest.mark.parametrize("announce", [True, False])
def test_item13_blob_longer_than_descriptor_message(reg: HostileRegistry, home: Path, announce: bool):
    manifest = publish(reg)
    layer = manifest["layers"][0]
    extra = b"x" * (1 << 20)
    reg.set("GET", _blob_path(manifest), Answer(200, [], tar_layer() + extra, length=None if announce else ""))
    outcome = assert_refused(pull_bounded(reg, home), "more than", f"{layer['size']} its descriptor says")
    assert "resume" not in outcome.message
    assert refs(home) == []
    assert not list((home / "state" / "downloads").glob("*.partial"))  # nothing left to "resume"


def test_range_answer_from_another_offset_is_refused(reg: HostileRegistry, home: Path):
    layer = tar_layer(data=b"y" * 5000)
    digest = reg.blob(REPO, layer)
    reg.set("GET", f"/v2/{REPO}/blobs/{digest}",
            Answer(206, [("Content-Range", f"bytes 0-{len(layer) - 1}/{len(layer)}")], layer))

    def resume() -> None:
        store = Store(home)
        partial = store.root / "state" / "downloads" / f"{digest.split(':')[1]}.partial"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(layer[:100])
        with QUIET.bar("pull", len(layer)) as bar:
            fetch_blob(store, RegistryClient(reg.host, reg.settings, None), REPO,
                       Descriptor(mt.OCI_LAYER_TAR, digest, len(layer)), bar)

    assert_refused(run_bounded(resume, budget_mb=BUDGET_MB, seconds=SECONDS), "asked for the bytes from 100")
    assert not Store(home).has_blob(digest)


def test_partial_download_symlink_is_never_written_through(reg: HostileRegistry, home: Path, tmp_path: Path):
    """A shared store's ``state/downloads`` holding a symlink to a user's file: the pull replaces the link."""
    manifest = publish(reg)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    partial = home / "state" / "downloads" / f"{manifest['layers'][0]['digest'].split(':')[1]}.partial"
    Store(home)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.symlink_to(victim)
    assert_clean(pull_bounded(reg, home))
    assert victim.read_text() == "precious\n"


# --- item 15: where credentials go --------------------------------------------------------------------


def _token_server(tls_dir: Path | None = None) -> HostileRegistry:
    tokens = HostileRegistry(tls_dir)
    tokens.set("GET", "/token", Answer(200, [("Content-Type", "application/json")], b'{"token": "tok.en-1"}'))
    return tokens


def test_item15_https_registry_never_sends_credentials_to_http_realm(tmp_path: Path):
    with HostileRegistry(tmp_path / "tls") as reg, _token_server() as tokens:
        _challenge(reg, f'Bearer realm="{tokens.url}/token",service="registry"')
        outcome = assert_refused(client_call(reg, "ping", creds=Credentials(USER, PASSWORD)), "plain HTTP",
                                 "does not send credentials")
        assert PASSWORD not in outcome.message
        assert tokens.requests == []  # not even a request: nothing of ours went over plain HTTP
        # Without credentials there is nothing to leak: an anonymous token may come over HTTP.
        assert_clean(client_call(reg, "ping"), allow_ok=True)
        assert [r.headers.get("Authorization") for r in tokens.requests] == [None]


def test_item15_credentials_go_to_an_https_realm_on_another_host_and_only_there(tmp_path: Path):
    """Docker's rule, kept: the realm the registry names gets the credentials, over HTTPS; a redirect
    of the token request to another origin gets none."""
    with HostileRegistry(tmp_path / "reg") as reg, _token_server(tmp_path / "tok") as tokens, \
            _token_server() as elsewhere:
        # one CA file for both TLS servers: the registry's settings apply to its token server
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(reg.ca_cert.read_bytes() + tokens.ca_cert.read_bytes())  # type: ignore[union-attr]
        _challenge(reg, f'Bearer realm="{tokens.url}/token",service="registry"')
        settings_ = RegistrySettings(ca_file=str(bundle))
        ok = run_bounded(lambda: RegistryClient(reg.host, settings_, Credentials(USER, PASSWORD)).ping())
        assert_clean(ok, allow_ok=True)
        assert ok.kind == "ok"
        assert [r.headers.get("Authorization") for r in tokens.requests] == [BASIC]
        # the token server redirects: the next hop (another origin) gets no credentials
        tokens.set("GET", "/token", Answer(302, [("Location", f"{elsewhere.url}/token")]))
        again = run_bounded(lambda: RegistryClient(reg.host, settings_, Credentials(USER, PASSWORD)).ping())
        assert_clean(again, allow_ok=True)
        assert [r.headers.get("Authorization") for r in elsewhere.requests] == [None]


def test_basic_credentials_stay_with_the_registry_across_redirects(reg: HostileRegistry, home: Path):
    manifest = publish(reg)
    with HostileRegistry() as cdn:
        layer = tar_layer()
        cdn.set("GET", "/blob", Answer(200, [], layer))
        reg.set("GET", _blob_path(manifest), Answer(307, [("Location", f"{cdn.url}/blob")]))
        reg.gate = lambda seen: None if seen.headers.get("Authorization") == BASIC else \
            Answer(401, [("WWW-Authenticate", 'Basic realm="r"')])
        outcome = assert_clean(pull_bounded(reg, home, creds=Credentials(USER, PASSWORD)))
        assert outcome.kind == "ok"
        assert [r.headers.get("Authorization") for r in cdn.requests] == [None]


# --- the commands: one line, exit 1, no traceback ------------------------------------------------------


def test_commands_print_one_line_errors(reg: HostileRegistry, tmp_path: Path):
    """What the library raises reaches the user as ``error: ...`` and exit code 1 (``ggufpack pull``,
    remote ``inspect``, ``login``, ``push``), with the registry's escapes made visible."""
    manifest = publish(reg)
    reg.set("GET", _blob_path(manifest), Answer(302, [("Location", "file:///etc/passwd")]))
    reg.set("GET", f"/v2/{REPO}/manifests/deep", Answer(200, [("Content-Type", mt.OCI_MANIFEST)], b"[" * 100000))
    reg.set("POST", f"/v2/{REPO}/blobs/uploads/", Answer(202))
    _challenge(reg, 'Bearer service="x\x1b[2J"')
    home = tmp_path / "home"
    target = f"{reg.host}/{REPO}"
    runs = [
        (["pull", "--plain-http", f"{target}:1"], "scheme is refused"),
        (["inspect", "--plain-http", f"{target}:deep"], "nested too deeply"),
        (["login", "--plain-http", reg.host, "-u", USER, "--password-stdin"], "names no realm"),
    ]
    for args, message in runs:
        out = run_cli(args, home, input_text=PASSWORD + "\n", DOCKER_CONFIG=str(tmp_path / "docker"),
                      REGISTRY_AUTH_FILE="")
        assert out.code == 1, (args, out.err)
        assert "Traceback" not in out.err and message in out.err, (args, out.err)
        errors = [line for line in out.err.splitlines() if line.startswith("error")]
        assert errors == [out.err.splitlines()[-1]] and "\x1b" not in out.err, out.err
    assert not (tmp_path / "docker").exists()


# --- ENOSPC --------------------------------------------------------------------------------------------


ENOSPC_PULL = textwrap.dedent("""
    import errno, json, os, sys
    from pathlib import Path
    from ggufpack.errors import DiskFullError
    from ggufpack.refs import parse_reference
    from ggufpack.registry.client import RegistryClient
    from ggufpack.registry.pull import pull_image
    from ggufpack.registry.settings import RegistrySettings
    from ggufpack.store import Store

    home, host = Path(sys.argv[1]) / "home", sys.argv[2]
    store = Store(home)
    before = sorted(p.name for p in (home / "blobs" / "sha256").iterdir())
    try:
        pull_image(store, parse_reference(f"{host}/r:1"), RegistryClient(host, RegistrySettings(plain_http=True), None),
                   platform="linux/amd64")
        result = {"kind": "ok"}
    except DiskFullError as e:
        cause = e.__cause__
        result = {"kind": "disk-full", "message": str(e), "errno": getattr(cause, "errno", None)}
    except OSError as e:
        result = {"kind": "oserror", "message": str(e), "errno": e.errno}
    result["blobs_before"] = before
    result["blobs_after"] = sorted(p.name for p in (home / "blobs" / "sha256").iterdir())
    result["refs"] = [r for image in store.images() for r in image.refs]
    result["ingest"] = sorted(p.name for p in home.rglob("*.tmp"))
    print(json.dumps(result))
""")


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs unshare -rm and tmpfs mounts")
def test_enospc_during_pull_is_disk_full_and_the_store_is_as_it_was(reg: HostileRegistry, tmp_path: Path):
    big = tar_layer(data=os.urandom(4 << 20))
    publish(reg, layers=[big])
    result = run_on_small_tmpfs(ENOSPC_PULL, "1m", tmp_path, reg.host)
    assert result["kind"] == "disk-full", result
    assert "no space left on device" in result["message"]
    assert result["errno"] == 28  # ENOSPC, kept as the cause
    assert result["refs"] == [] and result["ingest"] == []
    # only whole, verified blobs may have entered (the small config), never the layer that did not fit
    assert digest_of(big).split(":")[1] not in result["blobs_after"]


# --- store state a push or pull reads back ---------------------------------------------------------------


@pytest.mark.parametrize("content", [pytest.param(b"[" * 100000, id="deep"), b"\xff\xfe", b'{"sha256:x": "not a list"}',
                                     b"[1, 2]", b'{"d": [1, {"x": 2}, "ok/repo"]}'])
def test_hostile_known_blobs_and_upload_state_files_are_ignored(tmp_path: Path, content: bytes):
    def read_back() -> tuple[list[str], str | None]:
        store = Store(tmp_path / "home")
        known = KnownBlobs(store)
        known.directory.mkdir(parents=True, exist_ok=True)
        known._path("reg.example").write_bytes(content)
        state = _UploadState(store, "reg.example", "r", "sha256:" + "0" * 64)
        state.path.parent.mkdir(parents=True, exist_ok=True)
        state.path.write_bytes(content)
        return known.repositories("reg.example", "d"), state.load(RegistryClient("reg.example", None, None), print)

    outcome = assert_clean(run_bounded(read_back, budget_mb=BUDGET_MB, seconds=SECONDS), allow_ok=True)
    assert outcome.kind == "ok"
    repositories, location = outcome.value
    assert all(isinstance(r, str) for r in repositories) and location is None


# --- property-based cases ---------------------------------------------------------------------------------

_DIGEST = "sha256:" + "ab" * 32
_ODD_STRINGS = ["", "sha256:", _DIGEST, "sha512:" + "ab" * 64, "sha256:../../etc/passwd", mt.OCI_MANIFEST, mt.OCI_INDEX,
                mt.OCI_CONFIG, mt.OCI_LAYER_TAR, mt.OCI_LAYER_TAR_GZIP, mt.DOCKER_AI_CONFIG, mt.MODELPACK_CONFIG,
                "application/vnd.ollama.image.model", "text/plain", "a/b;c=d", "\x1b[31m", "../../x", "x" * 300]
_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(_ODD_STRINGS))
_KEYS = st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "manifests", "digest", "size", "platform",
                         "os", "architecture", "annotations", "artifactType", "urls", "rootfs", "diff_ids"])
JSON = st.recursive(_LEAVES, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_KEYS | st.text(max_size=6),
                                                                                          kids, max_size=5),
                    max_leaves=25)


_GOOD_MEDIA = [mt.OCI_CONFIG, mt.DOCKER_CONFIG, mt.MODELPACK_CONFIG, mt.DOCKER_AI_CONFIG, mt.OCI_LAYER_TAR,
               mt.OCI_LAYER_TAR_GZIP, mt.DOCKER_LAYER_TAR, mt.MODELPACK_WEIGHT_RAW, mt.DOCKER_AI_GGUF,
               mt.DOCKER_AI_LICENSE, mt.OLLAMA_MODEL, mt.OLLAMA_PARAMS, mt.OLLAMA_TEMPLATE, mt.OLLAMA_SYSTEM,
               mt.OLLAMA_ADAPTER, mt.OCI_EMPTY]
_SIZES = st.integers(min_value=-5, max_value=10000) | st.sampled_from([0, 1 << 50, (1 << 50) + 1, 1 << 63]) | _LEAVES


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` four times in five: deep enough into pull for the bad fifth to matter."""
    return st.sampled_from([True, True, True, True, False]).flatmap(lambda ok: good if ok else bad)


@st.composite
def _descriptor(draw: st.DrawFn, blobs: list[tuple[str, int]], prefer: list[tuple[str, int]], media: list[str]) -> Any:
    """A descriptor of a served blob (mostly one of ``prefer``, with a type of ``media``), each field right most
    of the time, wrong (type, value, range) else."""
    digest, size = draw(_mostly(st.sampled_from(prefer), st.sampled_from(blobs)))
    odd = st.sampled_from(_ODD_STRINGS) | _LEAVES
    d: dict[str, Any] = {"mediaType": draw(_mostly(st.sampled_from(media), st.sampled_from(_GOOD_MEDIA) | odd)),
                         "digest": draw(_mostly(st.just(digest), odd)),
                         "size": draw(_mostly(st.just(size), _SIZES))}
    if not draw(_mostly(st.just(True), st.just(False))):
        del d[draw(st.sampled_from(["mediaType", "digest", "size"]))]
    d.update(draw(st.fixed_dictionaries({}, optional={
        "annotations": _mostly(st.dictionaries(st.sampled_from(["org.cncf.model.filepath",
                                                                "org.opencontainers.image.title", "x"]),
                                               st.sampled_from(["m.gguf", "../../evil", "/abs", "a/b.gguf", ""])),
                               JSON),
        "platform": _mostly(st.just({"os": "linux", "architecture": "amd64"}), JSON),
        "artifactType": st.sampled_from(_ODD_STRINGS)})))
    return d if draw(_mostly(st.just(True), st.just(False))) else draw(JSON)


def _serve_blobs(reg: HostileRegistry, extra_config: bytes) -> list[tuple[str, int]]:
    """Blobs a fuzzed manifest may name: a good image's config and layer, configs that are not, a tiny GGUF-ish
    file, and ``extra_config``; returns (digest, size) of each."""
    layer = tar_layer()
    blobs = [config_for([layer]), layer, b"[" * 50000, b"not json", b'{"rootfs": {"diff_ids": [1, 2]}}',
             json.dumps({"rootfs": {"diff_ids": "sha256:x"}}).encode(), b"GGUF\x03\x00\x00\x00" + b"\x00" * 16,
             b'{"temperature": 0.5, "stop": ["a"]}', extra_config]
    return [(reg.blob(REPO, blob), len(blob)) for blob in blobs]


_CONFIGS = st.one_of(
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"rootfs": st.fixed_dictionaries({"type": st.just("layers"),
                                                            "diff_ids": st.lists(st.sampled_from(
                                                                [digest_of(tar_layer()), "sha256:x"]) | _LEAVES,
                                                                max_size=2) | JSON})},
                          optional={"config": JSON, "history": JSON, "os": _LEAVES, "architecture": _LEAVES,
                                    "format": _LEAVES, "files": JSON}).map(lambda v: json.dumps(v).encode()))


def _fresh(tmp_path: Path) -> Path:
    """A store home of its own for one example (the examples of a test share its tmp_path)."""
    return tmp_path / uuid.uuid4().hex


@FUZZ
@given(data=st.data())
def test_fuzz_manifests_and_indexes(reg: HostileRegistry, tmp_path: Path, data: st.DataObject):
    blobs = _serve_blobs(reg, data.draw(_CONFIGS))
    config = _descriptor(blobs, [blobs[0], blobs[-1]], [mt.OCI_CONFIG, mt.DOCKER_CONFIG, mt.MODELPACK_CONFIG,
                                                        mt.DOCKER_AI_CONFIG])
    layer = _descriptor(blobs, [blobs[1], blobs[6]], _GOOD_MEDIA[4:])
    descriptor = _mostly(layer, config)
    child = data.draw(st.fixed_dictionaries(
        {"schemaVersion": st.just(2), "config": config,
         "layers": _mostly(st.lists(layer, min_size=1, max_size=1), st.lists(descriptor, max_size=3))},
        optional={"mediaType": st.sampled_from([mt.OCI_MANIFEST, mt.DOCKER_MANIFEST, mt.OCI_INDEX, "x/y"]),
                  "artifactType": st.sampled_from([mt.MODELPACK_ARTIFACT, *_ODD_STRINGS])}))
    child_digest = reg.manifest(REPO, "child", child)
    size = len(json.dumps(child).encode())
    linux = st.just({"os": "linux", "architecture": "amd64"})
    entry = st.fixed_dictionaries({"mediaType": st.just(mt.OCI_MANIFEST), "digest": st.just(child_digest),
                                   "size": st.just(size), "platform": _mostly(linux, JSON)})
    as_index = data.draw(st.booleans())
    if as_index:
        manifest = data.draw(st.fixed_dictionaries(
            {"schemaVersion": _mostly(st.just(2), _LEAVES),
             "manifests": _mostly(st.lists(_mostly(entry, descriptor), min_size=1, max_size=3), JSON)},
            optional={"mediaType": st.sampled_from([mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, *_ODD_STRINGS])}))
    else:
        manifest = {**child, "schemaVersion": data.draw(_mostly(st.just(2), _LEAVES))}
        if not data.draw(_mostly(st.just(True), st.just(False))):
            manifest[data.draw(st.sampled_from(["layers", "config"]))] = data.draw(JSON)
    content_type = data.draw(st.sampled_from([mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, "", "text/html"]))
    reg.manifest(REPO, "1", manifest, content_type)
    assert_clean(pull_bounded(reg, _fresh(tmp_path)))
    assert_clean(run_bounded(lambda: inspect_remote(RegistryClient(reg.host, reg.settings, None),
                                                    parse_reference(f"{reg.host}/{REPO}:1"), "linux/amd64").format,
                             budget_mb=BUDGET_MB, seconds=SECONDS))


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode), st.sampled_from([
    b"[" * 100000, b'{"schemaVersion": 2, "layers": ' + b"[" * 100000, b'{"schemaVersion": 1e400}',
    b'{"schemaVersion": 2, "config": {"size": -0.0}}', b'\xef\xbb\xbf{"schemaVersion": 2}',
    b'{"schemaVersion": ' + b"9" * 5000 + b"}"])))
def test_fuzz_raw_manifest_bytes(reg: HostileRegistry, tmp_path: Path, raw: bytes):
    reg.manifest(REPO, "1", raw)
    assert_clean(pull_bounded(reg, _fresh(tmp_path)))


_HEADER_VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
    st.sampled_from(["abc", "-1", "1e400", "99999999999999999999999", "0x10", " 12 ", "", "1, 2", "bytes=0-", "0-",
                     "0-abc", "bytes 0-1/2", "bytes 5-1/*", "http://[::1", "file:///etc/passwd", "ftp://x/",
                     "//127.0.0.1:1/x", "javascript:alert(1)", "Bearer", 'Bearer realm=', 'Bearer realm="ftp://x"',
                     'Bearer realm="http://127.0.0.1:1/t",service="s"', 'Bearer realm="\x1b[2J"', "Basic", "Negotiate",
                     "\x1b[31mred", "a" * 10000]))
_HEADER_CASES = ["head-length", "upload-range", "challenge", "blob-location", "upload-location", "content-range",
                 "content-type", "blob-length"]


@FUZZ
@given(case=st.sampled_from(_HEADER_CASES), value=_HEADER_VALUES, status=st.sampled_from([200, 204, 206, 301, 302,
                                                                                           307, 401, 500]))
def test_fuzz_header_values(reg: HostileRegistry, tmp_path: Path, case: str, value: str, status: int):
    layer = tar_layer()
    digest = reg.blob(REPO, layer)
    blob_path = f"/v2/{REPO}/blobs/{digest}"
    upload = f"/v2/{REPO}/blobs/uploads/u1"
    call: Callable[[], Any]
    client = RegistryClient(reg.host, reg.settings, Credentials(USER, PASSWORD))
    if case == "head-length":
        reg.set("HEAD", blob_path, Answer(status, length=value))
        call = lambda: client.blob_size(REPO, digest)  # noqa: E731
    elif case == "upload-range":
        reg.set("GET", upload, Answer(204 if status == 200 else status, [("Range", value)]))
        call = lambda: client.upload_offset(f"{reg.url}{upload}")  # noqa: E731
    elif case == "challenge":
        reg.set("GET", "/v2/", Answer(401, [("WWW-Authenticate", value)]))
        call = client.ping
    elif case in ("blob-location", "upload-location"):
        if case == "blob-location":
            reg.set("GET", blob_path, Answer(status if 300 <= status < 400 else 302, [("Location", value)]))
            call = lambda: client.read_blob(REPO, digest, len(layer))  # noqa: E731
        else:
            reg.set("POST", f"/v2/{REPO}/blobs/uploads/", Answer(202, [("Location", value)]))
            call = lambda: client.start_upload(REPO)  # noqa: E731
    elif case == "content-range":
        reg.set("GET", blob_path, Answer(206, [("Content-Range", value)], layer[10:]))
        home = _fresh(tmp_path)

        def call() -> Any:
            store = Store(home)
            partial = store.root / "state" / "downloads" / f"{digest.split(':')[1]}.partial"
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(layer[:10])
            with QUIET.bar("pull", len(layer)) as bar:
                return fetch_blob(store, client, REPO, Descriptor(mt.OCI_LAYER_TAR, digest, len(layer)), bar)
    elif case == "content-type":
        reg.manifest(REPO, "1", publish(reg), value)
        home = _fresh(tmp_path)
        call = lambda: do_pull(home, reg.host, reg.settings)  # noqa: E731
    else:
        reg.set("GET", blob_path, Answer(200, [], layer, length=value))
        call = lambda: client.read_blob(REPO, digest, len(layer))  # noqa: E731
    assert_clean(run_bounded(call, budget_mb=BUDGET_MB, seconds=SECONDS))


@FUZZ
@given(status=st.sampled_from([200, 200, 200, 201, 302, 401, 403, 404, 500]),
       body=st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64),
                      st.fixed_dictionaries({}, optional={"token": _LEAVES | JSON, "access_token": _LEAVES}).map(
                          lambda v: json.dumps(v).encode())),
       location=_HEADER_VALUES, with_creds=st.booleans(), extra=_HEADER_VALUES)
def test_fuzz_token_server_answers(reg: HostileRegistry, status: int, body: bytes, location: str, with_creds: bool,
                                   extra: str):
    with HostileRegistry() as tokens:
        tokens.set("GET", "/token", Answer(status, [("Location", location), ("X-Odd", extra)], body))
        _challenge(reg, f'Bearer realm="{tokens.url}/token",service="s",scope="repository:{REPO}:pull"')
        creds = Credentials(USER, PASSWORD) if with_creds else None
        assert_clean(client_call(reg, "ping", creds=creds))

