"""Other model artifact formats through a real registry: ModelPack out and in, Docker Model Runner and
Ollama in.

The Docker and Ollama artifacts are assembled here with their real media types and pushed over raw
HTTP (the distribution API, by :class:`RegistryClient`'s low-level calls), as those tools publish
them; ``pull`` must recognise each and turn it into a store image with our config fields and labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ggufpack.errors import GGUFPackError
from ggufpack.formats.commit import image_path
from ggufpack.gguf_info import read_header_file
from ggufpack.images import inspect_image
from ggufpack.oci import mediatypes as mt
from ggufpack.oci.descriptor import canonical_json, sha256_digest
from ggufpack.oci.reader import MAX_MANIFEST_BYTES
from ggufpack.refs import parse_reference
from ggufpack.registry.client import RegistryClient
from ggufpack.registry.pull import pull_image
from ggufpack.registry.push import push_image
from ggufpack.registry.settings import RegistrySettings
from ggufpack.store import Store
from tests.helpers.builds import dangling, do_build, open_store, run_cli, sample_context, skopeo, tiny_gguf_bytes
from tests.helpers.httpserver import LoopbackHTTPServer
from tests.helpers.registry import LocalRegistry, registry_available, registry_fixture

pytestmark = pytest.mark.skipif(not registry_available(), reason="needs docker-registry, htpasswd and openssl")


registry = registry_fixture("reg")


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_gguf_bytes(tmp_path_factory.mktemp("gguf"), extra_kv={"general.name": "Tiny Test"})


def client(reg: LocalRegistry) -> RegistryClient:
    return RegistryClient(reg.host, RegistrySettings(plain_http=True), None)


def push_raw(reg: LocalRegistry, repository: str, tag: str, blobs: list[bytes], manifest: dict[str, Any],
             media_type: str) -> str:
    """Upload blobs and a manifest with plain distribution API calls (no ggufpack push logic)."""
    c = client(reg)
    for data in blobs:
        location = c.start_upload(repository)
        location = c.upload_chunk(location, lambda data=data: data, 0, len(data))
        c.finish_upload(location, sha256_digest(data))
    body = canonical_json(manifest)
    c.put_manifest(repository, tag, body, media_type)
    return sha256_digest(body)


def desc(data: bytes, media_type: str, **annotations: str) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}
    if annotations:
        out["annotations"] = annotations
    return out


def cmd_of(store: Store, ref: str) -> list[str]:
    info = inspect_image(store, store.resolve(ref))
    return list(info["cmd"])


# --- ModelPack -------------------------------------------------------------------------------------


def test_modelpack_push_is_a_cncf_artifact_with_raw_gguf_layers(registry, gguf_bytes, tmp_path: Path):
    store = open_store(tmp_path / "home")
    built = do_build(store, sample_context(tmp_path / "ctx", gguf_bytes))
    pushed = push_image(store, "sample:1", parse_reference(f"{registry.host}/mp/sample:1"), client(registry),
                        fmt="modelpack")
    assert pushed.digest != built.descriptor.digest
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/mp/sample:1")
    assert raw.returncode == 0, raw.stderr
    manifest = json.loads(raw.stdout)
    assert manifest["artifactType"] == mt.MODELPACK_ARTIFACT
    assert manifest["config"]["mediaType"] == mt.MODELPACK_CONFIG
    weights = [layer for layer in manifest["layers"] if layer["mediaType"] == mt.MODELPACK_WEIGHT_RAW]
    assert len(weights) == 1 and weights[0]["annotations"]["org.cncf.model.filepath"] == "models/tiny.gguf"
    # The raw layer is the GGUF file itself: same digest as the runnable file in the store.
    assert weights[0]["digest"] == sha256_digest(gguf_bytes)
    assert registry.blob_data_path(weights[0]["digest"]).read_bytes() == gguf_bytes
    others = {layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"] for layer in manifest["layers"]}
    assert others["docs/README.md"] == mt.MODELPACK_DOC_RAW
    assert others["prompts/system.txt"] == mt.MODELPACK_WEIGHT_CONFIG_RAW
    config = json.loads(store.read_blob(manifest["config"]["digest"]))
    assert config["config"]["format"] == "gguf" and config["modelfs"]["type"] == "layers"
    assert config["modelfs"]["diffIds"] == [layer["digest"] for layer in manifest["layers"]]
    assert config["descriptor"]["name"] == "Tiny Test"


def test_modelpack_round_trip_imports_to_a_runnable_image(registry, gguf_bytes, tmp_path: Path):
    store = open_store(tmp_path / "home")
    do_build(store, sample_context(tmp_path / "ctx", gguf_bytes))
    original = inspect_image(store, store.resolve("sample:1"))
    push_image(store, "sample:1", parse_reference(f"{registry.host}/mp/round:1"), client(registry), fmt="modelpack")
    fresh = open_store(tmp_path / "fresh")
    result = pull_image(fresh, parse_reference(f"{registry.host}/mp/round:1"), client(registry),
                        platform="linux/amd64")
    assert result.format == "modelpack"
    info = inspect_image(fresh, fresh.resolve(f"{registry.host}/mp/round:1"))
    assert info["cmd"] == original["cmd"]
    assert info["model"] == original["model"]
    assert info["labels"]["gguf.model.name"] == "Tiny Test"
    assert info["labels"]["io.ggufpack.imported.format"] == "modelpack"
    copies = [h["created_by"] for h in info["history"] if h.get("created_by", "").startswith("COPY")]
    assert copies and not any('"//' in c for c in copies), copies  # clean image paths in the history
    assert dangling(fresh) == []
    # The model file the image runs is byte-identical to the one pushed.
    files = {fresh.file_path(d).read_bytes()[:4] for d in fresh.resolve(f"{registry.host}/mp/round:1").files}
    assert b"GGUF" in files


def test_build_push_format_modelpack_via_cli(registry, gguf_bytes, tmp_path: Path):
    ctx = sample_context(tmp_path / "ctx", gguf_bytes)
    target = f"{registry.host}/mp/cli:1"
    out = run_cli(["build", "-t", target, "--push", "--format", "modelpack", "--plain-http", str(ctx)],
                  tmp_path / "home")
    assert out.code == 0, out.err
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{target}")
    assert json.loads(raw.stdout)["artifactType"] == mt.MODELPACK_ARTIFACT
    # What is printed is the digest of what was pushed, the artifact; the store keeps the image under the tag.
    pushed = sha256_digest(raw.stdout.encode())  # the manifest as the registry serves it
    assert out.out.strip() == pushed and f"pushed {target} ({pushed})" in out.err
    image = Store(tmp_path / "home").resolve(target).descriptor.digest
    assert image != pushed and f"built {image[7:19]}" in out.err


def test_remote_inspect_of_modelpack_and_ollama_artifacts_shows_what_they_tell(registry, gguf_bytes, tmp_path: Path):
    """An artifact still in the registry: its GGUF bytes, layers by file path, the model facts its config
    states; no platform (none is named), and the CMD when the artifact carries one, else what pull does.
    A loopback registry needs no --plain-http."""
    from ggufpack.terminal import human_size

    store = open_store(tmp_path / "home")
    do_build(store, sample_context(tmp_path / "ctx", gguf_bytes))
    modelpack = f"{registry.host}/insp/mp:1"
    push_image(store, "sample:1", parse_reference(modelpack), client(registry), fmt="modelpack")
    config = canonical_json({"model_format": "gguf", "model_family": "llama", "file_type": "F16",
                             "rootfs": {"type": "layers", "diff_ids": []}})
    manifest = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST, "config": desc(config, mt.DOCKER_CONFIG),
                "layers": [desc(gguf_bytes, mt.OLLAMA_MODEL), desc(b"Be brief.", mt.OLLAMA_SYSTEM)]}
    push_raw(registry, "insp/ollama", "latest", [config, gguf_bytes, b"Be brief."], manifest, mt.DOCKER_MANIFEST)
    ollama = f"{registry.host}/insp/ollama:latest"
    empty = tmp_path / "empty"
    shown = {ref: run_cli(["inspect", ref], empty) for ref in (modelpack, ollama)}
    assert all(out.code == 0 and "None" not in out.out for out in shown.values()), shown
    size_line = f"Size:      {human_size(len(gguf_bytes))} of GGUF, in the registry"
    text = shown[modelpack].out.splitlines()
    assert "Platform:  <none> (modelpack artifacts name none)" in text and size_line in text
    assert 'Cmd:       ["-m", "/models/tiny.gguf", "-c", "512"]' in text
    assert "  com.example.team=ml" in text and any(line.endswith("  models/tiny.gguf") for line in text)
    text = shown[ollama].out.splitlines()
    assert "Platform:  <none> (ollama artifacts name none)" in text and size_line in text
    assert "Cmd:       <made by pull from the artifact's layers>" in text
    assert "Model:     llama, F16 (as the ollama config states)" in text
    assert any(line.endswith(f"  {mt.OLLAMA_SYSTEM}") for line in text)
    info = json.loads(run_cli(["inspect", modelpack, "--format", "json"], empty).out)
    assert (info["platform"], info["size"], info["cmd"]) == (None, len(gguf_bytes), ["-m", "/models/tiny.gguf", "-c",
                                                                                   "512"])
    assert info["artifact"]["format"] == "modelpack"
    info = json.loads(run_cli(["inspect", ollama, "--format", "json"], empty).out)
    assert (info["platform"], info["size"], info["cmd"]) == (None, len(gguf_bytes), None)
    assert (info["artifact"]["architecture"], info["artifact"]["quantization"]) == ("llama", "F16")
    assert Store(empty).images() == []


# --- Docker Model Runner ---------------------------------------------------------------------------


def test_docker_model_runner_artifact_imports(registry, gguf_bytes, tmp_path: Path):
    template = b"{% for m in messages %}{{ m.content }}{% endfor %}"
    license_text = b"Apache-2.0\n"
    config = canonical_json({
        "config": {"format": "gguf", "quantization": "F16", "parameters": "1.2 M", "architecture": "llama",
                   "size": str(len(gguf_bytes)), "context_size": 2048},
        "descriptor": {"created": "2025-01-01T00:00:00Z"},
        "rootfs": {"type": "rootfs", "diff_ids": [sha256_digest(gguf_bytes)]},
    })
    manifest = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": desc(config, mt.DOCKER_AI_CONFIG),
        "layers": [desc(gguf_bytes, mt.DOCKER_AI_GGUF, **{"org.opencontainers.image.title": "tiny.gguf"}),
                   desc(template, mt.DOCKER_AI_CHAT_TEMPLATE), desc(license_text, mt.DOCKER_AI_LICENSE)],
    }
    digest = push_raw(registry, "ai/tiny", "F16", [config, gguf_bytes, template, license_text], manifest,
                      mt.OCI_MANIFEST)
    out = run_cli(["pull", f"{registry.host}/ai/tiny:F16", "--plain-http"], tmp_path / "home")
    assert out.code == 0, out.err
    assert "imported from a docker-ai artifact" in out.err
    assert out.out.strip() == digest  # the registry's digest, which `pull REPO@DIGEST` pulls again
    store = Store(tmp_path / "home")
    ref = f"{registry.host}/ai/tiny:F16"
    assert cmd_of(store, ref) == ["-m", "/models/tiny.gguf", "--chat-template-file", "/models/template.jinja",
                                  "-c", "2048"]
    info = inspect_image(store, store.resolve(ref))
    assert info["model"]["Architecture"] == "llama"
    assert info["labels"]["io.ggufpack.imported.digest"] == digest
    assert info["labels"]["gguf.model.name"] == "Tiny Test"
    assert dangling(store) == []


# --- Ollama --------------------------------------------------------------------------------------


def test_ollama_manifest_imports_with_system_prompt_and_params(registry, gguf_bytes, tmp_path: Path):
    system = b"You are a pirate."
    params = canonical_json({"num_ctx": 4096, "temperature": 0.2, "stop": ["<|end|>"]})
    template = b"{{ .System }} {{ .Prompt }}"
    config = canonical_json({"model_format": "gguf", "model_family": "llama", "file_type": "F16",
                             "rootfs": {"type": "layers", "diff_ids": []}})
    manifest = {
        "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
        "config": desc(config, mt.DOCKER_CONFIG),
        "layers": [desc(gguf_bytes, mt.OLLAMA_MODEL), desc(template, mt.OLLAMA_TEMPLATE),
                   desc(system, mt.OLLAMA_SYSTEM), desc(params, mt.OLLAMA_PARAMS)],
    }
    push_raw(registry, "library/tiny", "latest", [config, gguf_bytes, template, system, params], manifest,
             mt.DOCKER_MANIFEST)
    fresh = open_store(tmp_path / "home")
    result = pull_image(fresh, parse_reference(f"{registry.host}/library/tiny:latest"), client(registry),
                        platform="linux/amd64")
    assert result.format == "ollama"
    ref = f"{registry.host}/library/tiny:latest"
    assert cmd_of(fresh, ref) == ["-m", "/models/model.gguf", "--system-prompt-file", "/models/system.txt",
                                  "-c", "4096", "-r", "<|end|>", "--temp", "0.2"]
    record = fresh.resolve(ref)
    by_content = {fresh.file_path(d).read_bytes() for d in record.files}
    assert system in by_content and gguf_bytes in by_content
    model = next(d for d in record.files if fresh.file_path(d).read_bytes() == gguf_bytes)
    assert read_header_file(fresh.file_path(model)).metadata["general.name"] == "Tiny Test"
    assert dangling(fresh) == []


def test_index_is_resolved_by_platform_not_first_entry(registry, gguf_bytes, tmp_path: Path):
    """An index listing arm64 first: a linux/amd64 pull takes the amd64 manifest."""
    store = open_store(tmp_path / "home")
    built = do_build(store, sample_context(tmp_path / "ctx", gguf_bytes))
    push_image(store, "sample:1", parse_reference(f"{registry.host}/multi/sample:amd64"), client(registry))
    decoy = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": desc(b"{}", mt.OCI_CONFIG), "layers": []}
    decoy_digest = push_raw(registry, "multi/sample", "decoy", [b"{}"], decoy, mt.OCI_MANIFEST)
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": decoy_digest, "size": len(canonical_json(decoy)),
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": mt.OCI_MANIFEST, "digest": built.descriptor.digest, "size": built.descriptor.size,
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    c = client(registry)
    c.put_manifest("multi/sample", "both", canonical_json(index), mt.OCI_INDEX)
    fresh = open_store(tmp_path / "fresh")
    pulled = pull_image(fresh, parse_reference(f"{registry.host}/multi/sample:both"), c, platform="linux/amd64")
    assert pulled.digest == built.descriptor.digest
    out = run_cli(["pull", f"{registry.host}/multi/sample:both", "--plain-http", "--platform", "linux/s390x"],
                  tmp_path / "h2")
    assert out.code == 1 and "no manifest for platform linux/s390x" in out.err and "linux/amd64" in out.err


# --- estimate from configs only ----------------------------------------------------------------------


def test_estimate_agrees_for_stored_image_registry_ref_file_and_modelpack_import(registry, gguf_bytes,
                                                                                tmp_path: Path):
    """The config alone gives the estimate: locally, remotely (no layer fetched), from the file itself,
    and from an image imported from the ModelPack artifact."""
    home = tmp_path / "home"
    store = open_store(home)
    do_build(store, sample_context(tmp_path / "ctx", gguf_bytes))
    push_image(store, "sample:1", parse_reference(f"{registry.host}/est/sample:1"), client(registry))
    push_image(store, "sample:1", parse_reference(f"{registry.host}/est/mp:1"), client(registry), fmt="modelpack")
    local = run_cli(["estimate", "sample:1", "--json"], home)
    assert local.code == 0, local.err
    before = registry.log_text().count("GET /v2/est/sample/blobs/")
    remote = run_cli(["estimate", f"{registry.host}/est/sample:1", "--plain-http", "--json"], tmp_path / "empty")
    assert remote.code == 0, remote.err
    assert registry.log_text().count("GET /v2/est/sample/blobs/") - before == 1  # the config only
    model_file = tmp_path / "tiny.gguf"
    model_file.write_bytes(gguf_bytes)
    from_file = run_cli(["estimate", str(model_file), "-c", "512", "--json"], home)  # the image's CMD says -c 512
    assert from_file.code == 0, from_file.err
    pulled = run_cli(["pull", f"{registry.host}/est/mp:1", "--plain-http", "-q"], home)
    assert pulled.code == 0, pulled.err
    imported = run_cli(["estimate", f"{registry.host}/est/mp:1", "--json"], home)
    assert imported.code == 0, imported.err
    rows = json.loads(local.out)["estimates"]
    assert json.loads(remote.out)["estimates"] == rows
    assert json.loads(from_file.out)["estimates"] == rows
    assert json.loads(imported.out)["estimates"] == rows


# --- hostile artifacts ----------------------------------------------------------------------------


def test_hostile_manifests_are_refused_with_clear_errors(registry, gguf_bytes, tmp_path: Path):
    """Indexes naming indexes or unverifiable digests, descriptors without sizes, ModelPack paths out
    of the image: each is a one-line error, and the store gets no ref."""
    c = client(registry)
    config = canonical_json({"rootfs": {"type": "layers", "diff_ids": []}})
    image = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": desc(config, mt.OCI_CONFIG), "layers": []}
    image_digest = push_raw(registry, "bad/x", "image", [config], image, mt.OCI_MANIFEST)

    def index_of(digest: str, media_type: str) -> bytes:
        return canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
            {"mediaType": media_type, "digest": digest, "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}}
        ]})

    inner = index_of(image_digest, mt.OCI_MANIFEST)
    c.put_manifest("bad/x", "inner", inner, mt.OCI_INDEX)
    c.put_manifest("bad/x", "nested", index_of(sha256_digest(inner), mt.OCI_INDEX), mt.OCI_INDEX)
    sizeless = {**image, "layers": [{"mediaType": mt.OCI_LAYER_TAR, "digest": sha256_digest(b"x")}]}
    mp_config = canonical_json({"config": {"format": "gguf"}})
    escaping = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": mt.MODELPACK_ARTIFACT,
                "config": desc(mp_config, mt.MODELPACK_CONFIG),
                "layers": [desc(gguf_bytes, mt.MODELPACK_WEIGHT_RAW, **{"org.cncf.model.filepath": "../../evil.gguf"})]}
    push_raw(registry, "bad/x", "escaping", [mp_config, gguf_bytes], escaping, mt.OCI_MANIFEST)
    store = open_store(tmp_path / "home")
    for tag, message in (("nested", "nested indexes"), ("escaping", "unsafe file path")):
        with pytest.raises(GGUFPackError, match=message):
            pull_image(store, parse_reference(f"{registry.host}/bad/x:{tag}"), c, platform="linux/amd64")
    # What distribution refuses to store, a hostile registry can still serve.
    with LoopbackHTTPServer() as hostile:
        hostile.add_file("/v2/bad/x/manifests/sha512", index_of("sha512:" + "ab" * 64, mt.OCI_MANIFEST))
        hostile.add_file("/v2/bad/x/manifests/sizeless", canonical_json(sizeless))
        hostile.add_file("/v2/bad/x/manifests/huge", b"{" + b" " * MAX_MANIFEST_BYTES + b"}")
        via = RegistryClient(f"127.0.0.1:{hostile.port}", RegistrySettings(plain_http=True), None)
        for tag, message in (("sha512", "unsupported or malformed digest"), ("sizeless", "malformed descriptor"),
                             ("huge", "larger than")):
            with pytest.raises(GGUFPackError, match=message):
                pull_image(store, parse_reference(f"127.0.0.1:{hostile.port}/bad/x:{tag}"), via,
                           platform="linux/amd64")
    assert store.images() == []
    # Nothing is left behind: imports stage nothing (no scratch directory), and no ingest temp file stays.
    assert not (store.root / "state" / "imports").exists()
    assert list(store.layout.ingest.iterdir()) == []


@pytest.mark.parametrize(("tag", "filepath"), [("glob", "w[1]*.gguf"), ("dollar", "m/$HOME ${X}\nw.gguf")])
def test_modelpack_paths_with_glob_characters_import(registry, gguf_bytes, tmp_path: Path, tag: str, filepath: str):
    """Glob and expansion characters, newlines: any safe path imports as it is (nothing is lexed again),
    and the history names the content, the path and the artifact."""
    mp_config = canonical_json({"config": {"format": "gguf"}})
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": mt.MODELPACK_ARTIFACT,
                "config": desc(mp_config, mt.MODELPACK_CONFIG),
                "layers": [desc(gguf_bytes, mt.MODELPACK_WEIGHT_RAW, **{"org.cncf.model.filepath": filepath})]}
    artifact = push_raw(registry, "mp/glob", tag, [mp_config, gguf_bytes], manifest, mt.OCI_MANIFEST)
    store = open_store(tmp_path / "home")
    ref = f"{registry.host}/mp/glob:{tag}"
    pull_image(store, parse_reference(ref), client(registry), platform="linux/amd64")
    assert cmd_of(store, ref) == ["-m", f"/{filepath}"]
    copy, cmd = inspect_image(store, store.resolve(ref))["history"]
    assert copy["created_by"] == "COPY " + json.dumps([sha256_digest(gguf_bytes), f"/{filepath}"])
    assert copy["comment"] == cmd["comment"] == f"ggufpack import modelpack {artifact}"


@pytest.mark.parametrize("path", ["../evil.gguf", "a/../../evil.gguf", "a\\..\\evil.gguf", "a\0b.gguf", "/", ""])
def test_unsafe_artifact_paths_are_refused(path: str):
    with pytest.raises(GGUFPackError, match="unsafe file path"):
        image_path(path, "example.com/x:1")


def test_artifact_paths_are_cleaned():
    assert image_path("//prompts/./system.txt", "example.com/x:1") == "prompts/system.txt"


def test_an_ollama_model_with_parameters_imported_and_run_with_no_flags_answers(registry, tmp_path: Path):
    """What ``ollama run`` gives: an Ollama model with a system prompt and sampling parameters, pulled and
    run one-shot with the default runtime and no flag at all, answers; its parameters are the server's."""
    pytest.importorskip("llama_cpp")
    from tests.helpers.tiny_run import tiny_chat_gguf

    gguf = tiny_chat_gguf(tmp_path).read_bytes()  # a converted tiny Llama: a real tokenizer and chat template
    system, params = b"You are a pirate.", canonical_json({"num_ctx": 256, "temperature": 0.2, "num_predict": 8,
                                                           "stop": ["<|end|>"], "top_k": 20})
    config = canonical_json({"model_format": "gguf", "model_family": "llama", "file_type": "F16",
                             "rootfs": {"type": "layers", "diff_ids": []}})
    manifest = {
        "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST, "config": desc(config, mt.DOCKER_CONFIG),
        "layers": [desc(gguf, mt.OLLAMA_MODEL), desc(b"{{ .Prompt }}", mt.OLLAMA_TEMPLATE),
                   desc(system, mt.OLLAMA_SYSTEM), desc(params, mt.OLLAMA_PARAMS)],
    }
    push_raw(registry, "library/pirate", "latest", [config, gguf, b"{{ .Prompt }}", system, params], manifest,
             mt.DOCKER_MANIFEST)
    home = tmp_path / "home"
    ref = f"{registry.host}/library/pirate:latest"
    pulled = run_cli(["pull", "--plain-http", ref], home)
    assert pulled.code == 0, pulled.err
    answered = run_cli(["run", ref, "Ahoy?"], home, timeout=180)
    assert answered.code == 0, answered.err
    assert answered.out.strip(), "the model answered nothing"
    dry = run_cli(["run", "--dry-run", ref], home)
    assert dry.code == 0, dry.err
    assert '"temperature":0.2' in dry.out and '"top_k":20' in dry.out and '"stop":["<|end|>"]' in dry.out, dry.out
