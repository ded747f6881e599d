"""Push, pull, login against a real registry (Debian's docker-registry on loopback), checked by skopeo.

Three registries per module: plain HTTP, htpasswd basic auth over HTTP, and TLS with a self-signed
certificate. Images are built by the real build engine; what we push is read back by ``skopeo``
(an independent client) and by our own pull into a fresh store.
"""

from __future__ import annotations

import base64
import gzip
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from ggufpack.errors import GGUFPackError
from ggufpack.image.layer_index import index_layer
from ggufpack.oci import mediatypes as mt
from ggufpack.oci.descriptor import Descriptor, sha256_digest
from ggufpack.refs import Reference, parse_reference
from ggufpack.registry.auth import Credentials
from ggufpack.registry.client import RegistryClient, RegistryError
from ggufpack.registry.pull import pull_image
from ggufpack.registry.push import push_image
from ggufpack.registry.settings import RegistrySettings, settings_for
from ggufpack.store import Store
from tests.helpers.builds import (
    cli_env,
    dangling,
    do_build,
    image_tree,
    make_big_gguf,
    open_store,
    run_cli,
    sample_context,
    skopeo,
    write_context,
)
from tests.helpers.cutproxy import BufferingProxy
from tests.helpers.httpserver import LoopbackHTTPServer, ThreadedServer
from tests.helpers.registry import LocalRegistry, registry_available, registry_fixture
from tests.helpers.tokenserver import TokenServer

pytestmark = pytest.mark.skipif(not registry_available(), reason="needs docker-registry, htpasswd and openssl")

USER, PASSWORD = "alice", "correct horse"
PLAIN = RegistrySettings(plain_http=True)


registry = registry_fixture("reg-plain")


auth_registry = registry_fixture("reg-auth", auth=(USER, PASSWORD))


tls_registry = registry_fixture("reg-tls", auth=(USER, PASSWORD), tls=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding ``sample:1``, a two-stage image with an 8 MiB GGUF; returns (home, digest)."""
    root = tmp_path_factory.mktemp("built")
    model = make_big_gguf(root / "m.gguf", 8)
    store = open_store(root / "home")
    result = do_build(store, sample_context(root / "ctx", model.read_bytes()))
    return root / "home", result.descriptor.digest


def client(reg: LocalRegistry, creds: Credentials | None = None, **settings: bool) -> RegistryClient:
    return RegistryClient(reg.host, RegistrySettings(plain_http=not reg.tls, **settings), creds)


def ref(reg: LocalRegistry, name: str) -> Reference:
    return parse_reference(f"{reg.host}/{name}")


def patch_count(reg: LocalRegistry, repository: str) -> int:
    return sum(1 for line in reg.log_text().splitlines()
               if '"PATCH /v2/' + repository + "/blobs/uploads/" in line and '" 202 ' in line)


# --- round trips -----------------------------------------------------------------------------------


def test_push_pull_round_trip_same_digest_and_files(registry, built, tmp_path: Path):
    home, digest = built
    store = Store(home)
    pushed = push_image(store, "sample:1", ref(registry, "models/sample:1"), client(registry))
    assert pushed.digest == digest
    fresh = open_store(tmp_path / "fresh")
    pulled = pull_image(fresh, ref(registry, "models/sample:1"), client(registry), platform="linux/amd64")
    assert pulled.digest == digest and pulled.format == "image"
    assert dangling(fresh) == []
    src_manifest = store.read_json(digest)
    assert image_tree(fresh, fresh.read_json(digest)) == image_tree(store, src_manifest)
    # Pulled files are runnable in place: the GGUF under files/ is byte-identical to the built one.
    assert set(fresh.resolve(f"{registry.host}/models/sample:1").files) == set(store.resolve("sample:1").files)


def test_skopeo_reads_and_copies_what_we_push(registry, built, tmp_path: Path):
    home, digest = built
    push_image(Store(home), "sample:1", ref(registry, "skopeo/sample:1"), client(registry))
    out = skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/skopeo/sample:1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["Digest"] == digest
    copy = skopeo("copy", "--preserve-digests", "--src-tls-verify=false", f"docker://{registry.host}/skopeo/sample:1",
                  f"oci:{tmp_path / 'layout'}:copy")
    assert copy.returncode == 0, copy.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest


def test_second_push_sends_nothing_and_other_repo_mounts(registry, built):
    home, digest = built
    store = Store(home)
    first = push_image(store, "sample:1", ref(registry, "mount/a:1"), client(registry))
    n_blobs = first.stats.sent + first.stats.mounted + first.stats.skipped
    assert first.stats.skipped == 0  # a new repository: every blob was sent or mounted
    again = push_image(store, "sample:1", ref(registry, "mount/a:2"), client(registry))
    assert again.stats.sent == again.stats.mounted == again.stats.bytes_sent == 0 and again.stats.skipped == n_blobs
    other = push_image(store, "sample:1", ref(registry, "mount/b:1"), client(registry))
    assert other.stats.sent == 0 and other.stats.bytes_sent == 0 and other.stats.mounted == n_blobs
    assert other.digest == digest


def test_same_digest_in_two_registries(registry, auth_registry, built):
    home, digest = built
    store = Store(home)
    a = push_image(store, "sample:1", ref(registry, "two/sample:1"), client(registry))
    b = push_image(store, "sample:1", ref(auth_registry, "two/sample:1"),
                   client(auth_registry, Credentials(USER, PASSWORD)))
    assert a.digest == b.digest == digest


def test_pull_is_idempotent_and_reuses_blobs(registry, built, tmp_path: Path):
    home, _ = built
    push_image(Store(home), "sample:1", ref(registry, "idem/sample:1"), client(registry))
    fresh = open_store(tmp_path / "fresh")
    first = pull_image(fresh, ref(registry, "idem/sample:1"), client(registry), platform="linux/amd64")
    again = pull_image(fresh, ref(registry, "idem/sample:1"), client(registry), platform="linux/amd64")
    assert first.stats.fetched > 0 and again.stats.fetched == 0 and again.stats.present == first.stats.fetched


def test_build_from_a_pulled_image(registry, built, tmp_path: Path):
    home, _ = built
    push_image(Store(home), "sample:1", ref(registry, "base/sample:1"), client(registry))
    fresh = open_store(tmp_path / "fresh")
    pull_image(fresh, ref(registry, "base/sample:1"), client(registry), platform="linux/amd64")
    ctx = write_context(tmp_path / "ctx", f"FROM {registry.host}/base/sample:1\nCAT <<EOF /extra.txt\nmore\nEOF\n")
    result = do_build(fresh, ctx, tags=("derived:1",))
    assert result.stats.ops_run == 1
    assert dangling(fresh) == []


# --- auth and TLS --------------------------------------------------------------------------------


def test_auth_registry_needs_credentials(auth_registry, built):
    home, _ = built
    with pytest.raises(RegistryError, match="requires a login"):
        push_image(Store(home), "sample:1", ref(auth_registry, "auth/sample:1"), client(auth_registry))


def test_wrong_password_is_a_clear_error_and_nothing_is_saved(auth_registry, tmp_path: Path):
    home = tmp_path / "home"
    docker = tmp_path / "docker"
    env = {"DOCKER_CONFIG": str(docker)}
    bad = run_cli(["login", auth_registry.host, "-u", USER, "--password-stdin", "--plain-http"], home, **env,
                  input_text="wrong\n")
    assert bad.code == 1
    assert f"login to {auth_registry.host} failed: the registry refused the credentials of user 'alice'" in bad.err
    assert "nothing was saved" in bad.err and "run 'ggufpack login" not in bad.err
    assert "Traceback" not in bad.err and "wrong\n" not in bad.err
    assert not (docker / "config.json").exists()


def test_login_saves_0600_and_push_pull_use_it(auth_registry, built, tmp_path: Path):
    home, digest = built
    docker = tmp_path / "docker"
    env = {"DOCKER_CONFIG": str(docker)}
    ok = run_cli(["login", auth_registry.host, "-u", USER, "--password-stdin", "--plain-http"], tmp_path / "h",
                 **env, input_text=PASSWORD + "\n")
    assert ok.code == 0, ok.err
    config = docker / "config.json"
    assert config.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in ok.out + ok.err
    assert auth_registry.host in json.loads(config.read_text())["auths"]
    pushed = run_cli(["push", "sample:1", f"{auth_registry.host}/login/sample:1", "--plain-http", "-q"], home, **env)
    assert pushed.code == 0, pushed.err
    assert pushed.out.strip() == digest
    pulled = run_cli(["pull", f"{auth_registry.host}/login/sample:1", "--plain-http", "-q"], tmp_path / "h2", **env)
    assert pulled.code == 0, pulled.err
    out = run_cli(["logout", auth_registry.host], tmp_path / "h", **env)
    assert out.code == 0 and auth_registry.host not in json.loads(config.read_text())["auths"]


def test_loopback_registry_with_basic_auth_needs_no_plain_http(auth_registry, built, tmp_path: Path):
    """The HTTPS attempt falls back to HTTP before the 401 challenge: the retry with the credentials must go
    over HTTP too, with them (it went to the stale https:// URL, so to another origin, without them)."""
    home, digest = built
    env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
    login = ["login", auth_registry.host, "-u", USER, "--password-stdin"]
    bad = run_cli(login, tmp_path / "h", **env, input_text="wrong\n")
    assert bad.code == 1 and "refused the credentials of user 'alice'" in bad.err, bad.err
    ok = run_cli(login, tmp_path / "h", **env, input_text=PASSWORD + "\n")
    assert ok.code == 0, ok.err
    pushed = run_cli(["push", "sample:1", f"{auth_registry.host}/fallback/sample:1", "-q"], home, **env)
    assert pushed.code == 0 and pushed.out.strip() == digest, pushed.err
    pulled = run_cli(["pull", f"{auth_registry.host}/fallback/sample:1", "-q"], tmp_path / "h2", **env)
    assert pulled.code == 0 and pulled.out.strip() == digest, pulled.err


def test_tls_registry_with_self_signed_certificate(tls_registry, built, tmp_path: Path):
    home, digest = built
    creds = Credentials(USER, PASSWORD)
    with pytest.raises(RegistryError, match=r"TLS error.*--insecure"):
        client(tls_registry, creds).ping()
    pushed = push_image(Store(home), "sample:1", ref(tls_registry, "tls/sample:1"),
                        client(tls_registry, creds, insecure=True))
    assert pushed.digest == digest
    trusting = RegistryClient(tls_registry.host, RegistrySettings(ca_file=str(tls_registry.ca_cert)), creds)
    fresh = open_store(tmp_path / "fresh")
    assert pull_image(fresh, ref(tls_registry, "tls/sample:1"), trusting, platform="linux/amd64").digest == digest
    out = skopeo("inspect", "--tls-verify=false", f"--creds={USER}:{PASSWORD}",
                 f"docker://{tls_registry.host}/tls/sample:1")
    assert out.returncode == 0 and json.loads(out.stdout)["Digest"] == digest


# --- failures ------------------------------------------------------------------------------------


def test_registry_down_is_a_clear_error(tmp_path: Path, built):
    home, _ = built
    from tests.helpers.registry import free_port

    started = time.monotonic()
    out = run_cli(["push", "sample:1", f"127.0.0.1:{free_port()}/x/y:1", "--plain-http"], home)
    assert out.code == 1 and "cannot reach registry" in out.err and "Traceback" not in out.err
    assert time.monotonic() - started < 30  # no minute of silent retries


def test_tampered_blob_is_refused_and_store_untouched(registry, built, tmp_path: Path):
    home, _ = built
    store = Store(home)
    pushed = push_image(store, "sample:1", ref(registry, "tamper/sample:1"), client(registry))
    manifest = store.read_json(pushed.digest)
    biggest = max(manifest["layers"], key=lambda layer: layer["size"])
    data = registry.blob_data_path(biggest["digest"])
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    try:
        fresh = open_store(tmp_path / "fresh")
        with pytest.raises(GGUFPackError, match="failed verification"):
            pull_image(fresh, ref(registry, "tamper/sample:1"), client(registry), platform="linux/amd64")
        # No ref, no bad blob, no partial download, no runnable file: what did land is only verified
        # blobs (config, small layers), unreferenced until a good pull names them.
        assert fresh.images() == []
        assert not fresh.has_blob(biggest["digest"])
        assert not list((fresh.root / "state" / "downloads").glob("*.partial"))
        assert not [p for p in (fresh.root / "files").rglob("*") if p.is_file()]
    finally:
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))


CHUNK = 1_000_000  # --chunk-size 1M


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A store holding ``big:1`` (one 24 MiB GGUF layer); returns (home, total blob bytes)."""
    root = tmp_path_factory.mktemp("big")
    model = make_big_gguf(root / "m.gguf", 24)
    packerfile = 'FROM scratch\nCOPY big.gguf /\nCMD ["-m", "/big.gguf"]\n'
    result = do_build(open_store(root / "home"), write_context(root / "ctx", packerfile,
                                                               {"big.gguf": model.read_bytes()}), tags=("big:1",))
    manifest = result.image.manifest
    return root / "home", manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])


def test_connection_cut_mid_upload_resumes_without_resending(registry, big_image):
    """The connection dies in the middle of the 6th chunk; the next push sends only what the registry lacks."""
    home, total = big_image
    store = Store(home)
    with BufferingProxy("127.0.0.1", registry.port, cut_after=5 * CHUNK + CHUNK // 2) as proxy:
        target = parse_reference(f"{proxy.host}/cut/big:1")
        via_proxy = RegistryClient(proxy.host, PLAIN, None)
        with pytest.raises(RegistryError, match="cannot reach registry"):
            push_image(store, "big:1", target, via_proxy, chunk_size=CHUNK, jobs=1)
        assert proxy.cuts == 1
        # One PATCH for the config blob (sent first), then 5 whole chunks of the GGUF layer.
        assert patch_count(registry, "cut/big") == 1 + 5
        again = push_image(store, "big:1", target, RegistryClient(proxy.host, PLAIN, None), chunk_size=CHUNK, jobs=1)
    assert again.stats.resumed == 1 and again.stats.sent == 1 and again.stats.skipped == 1
    # Not one byte the registry acknowledged before the cut is sent again.
    big = max(layer["size"] for layer in store.read_json(again.digest)["layers"])
    assert again.stats.bytes_sent == big - 5 * CHUNK
    assert total > big
    out = skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/cut/big:1")
    assert out.returncode == 0 and json.loads(out.stdout)["Digest"] == again.digest


def test_sigterm_stops_at_a_chunk_boundary_and_the_next_push_resumes(registry, big_image):
    home, total = big_image
    target = f"{registry.host}/term/big:1"
    args = [sys.executable, "-m", "ggufpack", "push", "big:1", target, "--plain-http", "--chunk-size", "1M",
            "--jobs", "1", "--progress", "plain"]
    proc = subprocess.Popen(args, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while patch_count(registry, "term/big") < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run it again to resume" in err and "Traceback" not in err
    first = patch_count(registry, "term/big")
    assert 5 <= first < 24
    result = run_cli(["push", "big:1", target, "--plain-http", "--chunk-size", "1M", "--jobs", "1"], home)
    assert result.code == 0, result.err
    assert "1 resumed" in result.err
    # The big layer needs ceil(size / 1M) PATCHes in all: none was sent twice.
    big = max(layer["size"] for layer in Store(home).read_json(result.out.strip())["layers"])
    assert patch_count(registry, "term/big") == -(-big // CHUNK) + (1 if total - big > 0 else 0)
    assert skopeo("inspect", "--tls-verify=false", f"docker://{target}").returncode == 0


# --- builds ---------------------------------------------------------------------------------------


def test_build_pulls_registry_bases_and_pushes(registry, built, tmp_path: Path):
    """FROM and COPY --from name registry images the store lacks: the build pulls them, then --push."""
    home, _ = built
    push_image(Store(home), "sample:1", ref(registry, "bases/sample:1"), client(registry))
    base = f"{registry.host}/bases/sample:1"
    packerfile = (
        f"FROM {base}\n"
        f"COPY --from={base} /prompts/system.txt /copied.txt\n"
        "CAT <<EOF /extra.txt\nmore\nEOF\n"
    )
    ctx = write_context(tmp_path / "ctx", packerfile)
    fresh = tmp_path / "fresh"
    target = f"{registry.host}/derived/sample:2"
    out = run_cli(["build", "-t", target, "--push", "--plain-http", "--progress", "plain", str(ctx)], fresh)
    assert out.code == 0, out.err
    digest = out.out.strip()
    assert f"pushed {target}" in out.err
    inspected = skopeo("inspect", "--tls-verify=false", f"docker://{target}")
    assert inspected.returncode == 0 and json.loads(inspected.stdout)["Digest"] == digest
    assert dangling(Store(fresh)) == []
    # The base was pulled once and is now a store image of its own.
    assert Store(fresh).resolve(base).descriptor.digest == Store(home).resolve("sample:1").descriptor.digest


def test_remote_inspect_fetches_no_layers(registry, built, tmp_path: Path):
    home, digest = built
    push_image(Store(home), "sample:1", ref(registry, "remote/sample:1"), client(registry))
    before = registry.log_text().count("GET /v2/remote/sample/blobs/")
    out = run_cli(["inspect", f"{registry.host}/remote/sample:1", "--plain-http", "--format", "json"], tmp_path / "h")
    assert out.code == 0, out.err
    info = json.loads(out.out)
    assert info["digest"] == digest and info["model"]["Architecture"] == "llama"
    blob_gets = registry.log_text().count("GET /v2/remote/sample/blobs/") - before
    assert blob_gets == 1  # the config, nothing else
    assert Store(tmp_path / "h").images() == []


def test_bearer_token_flow(built, tmp_path: Path):
    """Docker Hub-style auth: a token server issues scoped JWTs; wrong passwords get no token."""
    home, digest = built
    with TokenServer(tmp_path / "tokens", USER, PASSWORD) as tokens, \
            LocalRegistry(tmp_path / "reg", token_auth=tokens.registry_auth_config()) as reg:
        with pytest.raises(RegistryError, match="wrong username or password"):
            client(reg, Credentials(USER, "nope")).ping()
        good = client(reg, Credentials(USER, PASSWORD))
        pushed = push_image(Store(home), "sample:1", ref(reg, "team/sample:1"), good)
        assert pushed.digest == digest
        assert any("repository:team/sample:" in r["scope"] and "push" in r["scope"] for r in tokens.requests)
        fresh = open_store(tmp_path / "fresh")
        pulled = pull_image(fresh, ref(reg, "team/sample:1"), client(reg, Credentials(USER, PASSWORD)),
                            platform="linux/amd64")
        assert pulled.digest == digest
        # A second repository: a new scope, so a new token; the mount needs pull on the source too.
        mounted = push_image(Store(home), "sample:1", ref(reg, "other/sample:1"), good)
        assert mounted.stats.sent == 0 and mounted.stats.mounted > 0


def test_cut_download_resumes_with_a_range_request(registry, big_image, tmp_path: Path):
    home, total = big_image
    store = Store(home)
    pushed = push_image(store, "big:1", ref(registry, "dl/big:1"), client(registry))
    big = max(layer["size"] for layer in store.read_json(pushed.digest)["layers"])
    cut = 7 * CHUNK + 123
    fresh = open_store(tmp_path / "fresh")
    with BufferingProxy("127.0.0.1", registry.port, cut_response_after=cut) as proxy:
        source = parse_reference(f"{proxy.host}/dl/big:1")
        with pytest.raises(GGUFPackError, match="run the pull again to resume"):
            pull_image(fresh, source, RegistryClient(proxy.host, PLAIN, None), platform="linux/amd64", jobs=1)
        assert proxy.cuts == 1 and fresh.images() == []
        again = pull_image(fresh, source, RegistryClient(proxy.host, PLAIN, None), platform="linux/amd64", jobs=1)
        (asked,) = proxy.ranges
    # The read in flight when the connection died is lost (at most one 256 KiB read), no more.
    start = int(asked.removeprefix("bytes=").removesuffix("-"))
    assert cut - 256 * 1024 <= start <= cut
    assert again.digest == pushed.digest
    # The config came whole the first time; only the rest of the big layer came the second time.
    assert again.stats.bytes_fetched == big - start and again.stats.present == 1
    assert dangling(fresh) == []
    assert total > big


def test_per_registry_settings_file(tls_registry, built, tmp_path: Path):
    """registries.json in the ggufpack home makes a flag unnecessary for that registry: here the CA of a
    self-signed registry, which is refused without it."""
    home, digest = built
    target = f"{tls_registry.host}/settings/sample:1"
    env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
    login = ["login", tls_registry.host, "-u", USER, "--password-stdin"]
    refused = run_cli(login, home, input_text=PASSWORD + "\n", **env)
    assert refused.code == 1 and "TLS error" in refused.err and "ca_file in registries.json" in refused.err
    settings = {"registries": {tls_registry.host: {"ca_file": str(tls_registry.ca_cert)}}}
    (home / "registries.json").write_text(json.dumps(settings))
    try:
        assert run_cli(login, home, input_text=PASSWORD + "\n", **env).code == 0
        out = run_cli(["push", "sample:1", target, "-q"], home, **env)
        assert out.code == 0, out.err
        assert out.out.strip() == digest
    finally:
        (home / "registries.json").unlink()


def test_loopback_registries_speak_http_without_plain_http(registry, tls_registry, built, tmp_path: Path):
    """As Docker treats 127.0.0.0/8 as an insecure registry, a loopback registry that answers in plain HTTP
    needs no --plain-http (HTTPS is tried first); a loopback HTTPS registry keeps its certificate checked."""
    home, digest = built
    target = f"{registry.host}/loopback/sample:1"
    pushed = run_cli(["push", "sample:1", target, "-q"], home)
    assert pushed.code == 0 and pushed.out.strip() == digest, pushed.err
    remote = run_cli(["inspect", target, "--format", "json"], tmp_path / "h")
    assert remote.code == 0 and json.loads(remote.out)["digest"] == digest, remote.err
    pulled = run_cli(["pull", target, "-q"], tmp_path / "h")
    assert pulled.code == 0 and pulled.out.strip() == digest, pulled.err
    with pytest.raises(RegistryError, match="TLS error"):  # a bad certificate never makes it fall back to HTTP
        RegistryClient(tls_registry.host, settings_for(tls_registry.host), None).ping()
    assert settings_for("localhost:5000").http_fallback and settings_for("[::1]:5000").http_fallback
    assert settings_for("127.8.9.10").http_fallback
    assert not settings_for("127.0.0.1:5000", plain_http=True).http_fallback  # HTTP straight away
    for remote_host in ("128.0.0.1:5000", "registry.example:5000", "localhost.example", "[::2]:5000"):
        assert not settings_for(remote_host).http_fallback


def test_manifests_by_digest_are_named_with_an_at(registry, built, tmp_path: Path):
    """``repo@sha256:...`` in what pull says, for a digest it finds and one it does not."""
    home, digest = built
    push_image(Store(home), "sample:1", ref(registry, "bydigest/sample:1"), client(registry))
    pulled = run_cli(["pull", f"{registry.host}/bydigest/sample@{digest}"], tmp_path / "h")
    assert pulled.code == 0 and pulled.out.strip() == digest, pulled.err
    assert f"pulled {registry.host}/bydigest/sample@{digest}" in pulled.err
    unknown = "sha256:" + "0" * 64
    missing = run_cli(["pull", f"{registry.host}/bydigest/sample@{unknown}"], tmp_path / "h")
    assert missing.code == 1 and f"manifest bydigest/sample@{unknown}" in missing.err
    assert f"sample:{unknown}" not in missing.err
    listed = json.loads(run_cli(["list", "--format", "json"], tmp_path / "h").out)
    assert [(row["tag"], row["digest"]) for row in listed] == [("<none>", digest)]  # as `docker images` lists it



# --- hostile or odd registries --------------------------------------------------------------------


def _front_handler(blob_url: str, upload_url: str) -> type[BaseHTTPRequestHandler]:
    """A registry front with basic auth that keeps nothing itself: blob GETs are redirected to
    ``blob_url`` (as registries do to S3), uploads are opened at ``upload_url`` (another host)."""
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, **headers: str) -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": "0"}.items():
                self.send_header(key, value)
            self.end_headers()

        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected:
                self._answer(401, **{"WWW-Authenticate": 'Basic realm="test"'})
            elif "/blobs/" in self.path:
                self._answer(307, Location=blob_url)
            else:
                self._answer(200)

        def do_POST(self) -> None:
            if self.headers.get("Authorization") != expected:
                self._answer(401, **{"WWW-Authenticate": 'Basic realm="test"'})
            else:
                self._answer(202, Location=upload_url)

    return Handler


def test_credentials_stay_with_the_registry_and_upload_urls_stay_out_of_errors():
    data = b"the blob's bytes"
    with LoopbackHTTPServer() as other:
        other.add_file("/storage/blob", data)
        other.add_status("/v2/r/blobs/uploads/u1", 500)
        handler = _front_handler(other.url("/storage/blob"), other.url("/v2/r/blobs/uploads/u1?_state=SECRETSTATE"))
        with ThreadedServer(handler) as front:
            c = RegistryClient(f"127.0.0.1:{front.port}", PLAIN, Credentials(USER, PASSWORD))
            with c.get_blob("r", sha256_digest(data)) as resp:
                assert resp.content == data
            location = c.start_upload("r")
            with pytest.raises(RegistryError) as failure:
                c.upload_offset(location)
    # Neither the redirected download nor the upload session on another host got the password.
    assert [r.path.split("?")[0] for r in other.requests] == ["/storage/blob", "/v2/r/blobs/uploads/u1"]
    assert [r.headers.get("Authorization") for r in other.requests] == [None, None]
    # The upload URL's session token is a secret too: the error names the URL without it.
    assert "/v2/r/blobs/uploads/u1" in str(failure.value) and "SECRETSTATE" not in str(failure.value)


def test_a_complete_partial_download_is_stored_without_asking_again(registry, built, tmp_path: Path):
    """A pull killed after the last byte but before the blob moved in: the next pull must not ask for
    an empty range (the registry answers 416), it checks the file and stores it."""
    home, digest = built
    store = Store(home)
    push_image(store, "sample:1", ref(registry, "partial/sample:1"), client(registry))
    biggest = max(store.read_json(digest)["layers"], key=lambda layer: layer["size"])
    fresh = open_store(tmp_path / "fresh")
    partial = fresh.root / "state" / "downloads" / (biggest["digest"].split(":")[1] + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(store.read_blob(biggest["digest"]))
    before = registry.log_text().count(f"GET /v2/partial/sample/blobs/{biggest['digest']}")
    result = pull_image(fresh, ref(registry, "partial/sample:1"), client(registry), platform="linux/amd64")
    assert result.digest == digest and fresh.has_blob(biggest["digest"]) and not partial.exists()
    assert registry.log_text().count(f"GET /v2/partial/sample/blobs/{biggest['digest']}") == before
    assert dangling(fresh) == []


def test_two_pushes_resuming_one_upload_send_each_chunk_once(registry, big_image):
    """Two pushes of one image from one store after a cut: the second waits for the first's upload of
    the shared blob instead of sending the same chunks to the same session (which one of them would fail)."""
    home, total = big_image
    store = Store(home)
    with BufferingProxy("127.0.0.1", registry.port, cut_after=3 * CHUNK + CHUNK // 2) as proxy:
        target = parse_reference(f"{proxy.host}/twice/big:1")
        with pytest.raises(RegistryError, match="cannot reach registry"):
            push_image(store, "big:1", target, RegistryClient(proxy.host, PLAIN, None), chunk_size=CHUNK, jobs=1)
        results: list[object] = []

        def push() -> None:
            try:
                results.append(push_image(Store(home), "big:1", target, RegistryClient(proxy.host, PLAIN, None),
                                          chunk_size=CHUNK, jobs=1))
            except Exception as e:  # reported by the assertion below
                results.append(e)

        threads = [threading.Thread(target=push) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert all(not isinstance(r, Exception) for r in results), results
    big = max(layer["size"] for layer in store.read_json(results[0].digest)["layers"])  # type: ignore[union-attr]
    assert patch_count(registry, "twice/big") == -(-big // CHUNK) + (1 if total - big > 0 else 0)
    assert sorted(r.stats.resumed for r in results) == [0, 1]  # type: ignore[union-attr]


def test_a_gzip_layer_that_is_not_gzip_is_a_clear_error(tmp_path: Path):
    store = open_store(tmp_path / "home")
    for data in (b"not gzip at all" * 10, gzip.compress(b"\0" * 1024) + b"trailing garbage"):
        digest, size = store.put_bytes(data)
        with pytest.raises(GGUFPackError, match="not a valid gzip stream"):
            index_layer(store, Descriptor(mt.OCI_LAYER_TAR_GZIP, digest, size), "sha256:" + "0" * 64)


@pytest.mark.parametrize("args", [["push", "x", "localhost:5000/y:1", "--jobs", "0"],
                                  ["pull", "localhost:5000/y:1", "--jobs", "-1"],
                                  ["push", "x", "localhost:5000/y:1", "--chunk-size", "lots"]])
def test_bad_transfer_options_are_usage_errors(args: list[str], tmp_path: Path):
    out = run_cli(args, tmp_path / "home")
    assert out.code == 2 and out.err.startswith("error: ") and "Traceback" not in out.err


def test_prune_removes_what_a_cut_pull_left(registry, big_image, tmp_path: Path):
    """A cut download keeps its partial file for a resume; an explicit prune reclaims it."""
    home, _ = big_image
    push_image(Store(home), "big:1", ref(registry, "prune/big:1"), client(registry))
    fresh = open_store(tmp_path / "fresh")
    with (BufferingProxy("127.0.0.1", registry.port, cut_response_after=5 * CHUNK) as proxy,
          pytest.raises(GGUFPackError, match="run the pull again to resume")):
        pull_image(fresh, parse_reference(f"{proxy.host}/prune/big:1"), RegistryClient(proxy.host, PLAIN, None),
                   platform="linux/amd64", jobs=1)
    partials = list((fresh.root / "state" / "downloads").glob("*.partial"))
    assert len(partials) == 1 and partials[0].stat().st_size >= 4 * CHUNK
    result = fresh.prune()
    assert not list((fresh.root / "state" / "downloads").iterdir())
    assert result.bytes_freed >= 4 * CHUNK
