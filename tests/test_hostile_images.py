"""Hostile image JSON: configs, manifests and store index entries, from a registry or a store.

An image reaches ggufpack from a registry (``pull``, remote ``inspect``, ``FROM``) or sits in a
store that someone else can write (a shared store, an unpacked archive). Either way its JSON is
untrusted: every field ggufpack uses goes through the typed reader (:mod:`ggufpack.oci.reader`),
and a bad one must end in our own error, never a traceback, and never break commands on the
store's other images. Hostile images are pushed to a real loopback registry (Debian's
``docker-registry``) or written straight into a store directory; the property-based cases run
each command in a forked child with an address-space cap and a deadline (:mod:`tests.helpers.bounded`).

Also here: the symlink rule the build and pull share (item 12), terminal escapes in metadata
(item 13) and Docker Model Runner configs (item 10).
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import os
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.errors import GGUFPackError
from ggufpack.oci import mediatypes as mt
from ggufpack.oci.descriptor import Descriptor, canonical_json, sha256_digest
from ggufpack.oci.extract import iter_layer_members
from ggufpack.oci.reader import ImageConfig, MalformedImageError
from ggufpack.oci.symlinks import UnsafeSymlinkError
from ggufpack.oci.tarlayer import LayerEntry, write_layer
from ggufpack.refs import parse_reference
from ggufpack.registry.client import RegistryClient
from ggufpack.registry.pull import pull_image
from ggufpack.registry.push import push_image
from ggufpack.registry.settings import RegistrySettings
from ggufpack.store import Store
from tests.helpers.bounded import Outcome, assert_clean, assert_refused, run_bounded
from tests.helpers.builds import do_build, open_store, run_cli, tiny_gguf_bytes, write_context
from tests.helpers.registry import LocalRegistry, registry_available, registry_fixture

needs_registry = pytest.mark.skipif(not registry_available(), reason="needs docker-registry, htpasswd and openssl")

PACKERFILE = 'FROM scratch\nCOPY tiny.gguf /models/\nCMD ["-m", "/models/tiny.gguf", "-c", "512"]\n'
GOOD = "good:1"
#: what a hostile case may never print raw: ESC, CSI (C1), BEL, a bidi override
RAW_CONTROLS = ("\x1b", "\x9b", "\x07", "\u202e")
HYPOTHESIS = settings(max_examples=30, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_gguf_bytes(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def built_home(tmp_path_factory: pytest.TempPathFactory, gguf_bytes: bytes) -> Path:
    """A store holding ``good:1``, a one-layer model image built by the real engine."""
    root = tmp_path_factory.mktemp("built")
    do_build(open_store(root / "home"), write_context(root / "ctx", PACKERFILE, {"tiny.gguf": gguf_bytes}),
             tags=[GOOD])
    return root / "home"


@pytest.fixture
def home(built_home: Path, tmp_path: Path) -> Path:
    """A private copy of the built store, free to be made hostile."""
    target = tmp_path / "home"
    shutil.copytree(built_home, target, symlinks=True)
    return target


registry = registry_fixture("reg")


def good_image(store: Store) -> tuple[dict[str, Any], dict[str, Any]]:
    """Deep copies of the good image's manifest and config."""
    manifest = store.read_json(store.resolve(GOOD).descriptor.digest)
    return copy.deepcopy(manifest), copy.deepcopy(store.read_json(manifest["config"]["digest"]))


def as_bytes(doc: Any) -> bytes:
    return doc if isinstance(doc, bytes) else canonical_json(doc)


def plant(store: Store, ref: str, config: Any, manifest: dict[str, Any] | bytes | None = None) -> str:
    """Write an image straight into the store (as an untrusted archive or a shared store could): the
    good image's layers under ``config`` (any JSON, or raw bytes), named ``ref``; returns its digest."""
    record = store.resolve(GOOD)
    base, _ = good_image(store)
    config_digest, config_size = store.put_bytes(as_bytes(config))
    if manifest is None:
        base["config"] = {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": config_size}
        manifest = base
    digest, size = store.put_bytes(as_bytes(manifest))
    store.set_ref(ref, Descriptor(mt.OCI_MANIFEST, digest, size), files=record.files)
    return digest


def cli_in_child(home: Path, args: Sequence[str]) -> tuple[int, str, str]:
    """``ggufpack ARGS`` by ``cli.main`` (so anything but our errors propagates as a traceback)."""
    from ggufpack import cli

    os.environ["GGUFPACK_HOME"] = str(home)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def bounded_cli(home: Path, *args: str, seconds: float = 90) -> tuple[int, str, str]:
    """A CLI run in a forked child capped in memory and time; it must not raise anything but ours."""
    outcome = assert_clean(run_bounded(cli_in_child, home, args, budget_mb=768, seconds=seconds))
    assert outcome.kind == "ok", str(outcome)  # cli.main turns our errors into an exit code
    code, out, err = outcome.value
    assert code in (0, 1, 2) and "Traceback" not in err, (code, err)
    return code, out, err


def client(reg: LocalRegistry) -> RegistryClient:
    return RegistryClient(reg.host, RegistrySettings(plain_http=True), None)


def push_documents(reg: LocalRegistry, repository: str, tag: str, blobs: Sequence[bytes], manifest: Any) -> str:
    """Blobs and a manifest (any JSON) sent with plain distribution API calls, as any tool could."""
    c = client(reg)
    for data in blobs:
        location = c.start_upload(repository)
        location = c.upload_chunk(location, lambda data=data: data, 0, len(data))
        c.finish_upload(location, sha256_digest(data))
    body = as_bytes(manifest)
    c.put_manifest(repository, tag, body, mt.OCI_MANIFEST)
    return sha256_digest(body)


def push_hostile(reg: LocalRegistry, store: Store, repository: str, config: Any) -> str:
    """The good image's layers with ``config`` pushed under ``repository:hostile``; returns the ref."""
    manifest, _ = good_image(store)
    data = as_bytes(config)
    manifest["config"] = {"mediaType": mt.OCI_CONFIG, "digest": sha256_digest(data), "size": len(data)}
    layers = [store.read_blob(layer["digest"]) for layer in manifest["layers"]]
    push_documents(reg, repository, "hostile", [data, *layers], manifest)
    return f"{reg.host}/{repository}:hostile"


def mutated(config: dict[str, Any], path: Sequence[str | int], value: Any) -> dict[str, Any]:
    """A copy of ``config`` with ``value`` put at ``path`` (containers made on the way as needed)."""
    out = copy.deepcopy(config)
    if not path:
        return value
    node: Any = out
    for key, nxt in itertools.pairwise(path):
        child = node[key] if isinstance(node, dict) and key in node else (
            node[key] if isinstance(node, list) and isinstance(key, int) and key < len(node) else None)
        if not isinstance(child, dict | list):
            child = [] if isinstance(nxt, int) else {}
            _put(node, key, child)
        node = child
    _put(node, path[-1], value)
    return out


def _put(node: Any, key: str | int, value: Any) -> None:
    if isinstance(node, list):
        index = key if isinstance(key, int) else 0
        if index < len(node):
            node[index] = value
        else:
            node.append(value)
    else:
        node[str(key)] = value


#: the hostile configs the review found, each with a fragment of the error it must give
FOUND = {
    "labels-list": (("config", "Labels"), ["a=b"], "Labels"),
    "size-string": (("config", "Size"), "12", "Size"),
    "config-string": (("config",), "Cmd", "config.config"),
    "history-not-objects": (("history",), ["COPY x", 1], "history[0]"),
    "model-string": (("config", "Model"), "/models/tiny.gguf", "Model"),
    "label-value-int": (("config", "Labels", "gguf.model.name"), 7, "Labels"),
    "cmd-string": (("config", "Cmd"), "-m /models/tiny.gguf", "Cmd"),
    "cmd-with-integers": (("config", "Cmd"), ["-m", "/models/tiny.gguf", "-c", 512], "Cmd[3]"),
}


# --- item 3: hostile configs at the boundary --------------------------------------------------------


@needs_registry
def test_item03_labels_list_is_refused_at_pull(registry, home: Path, tmp_path: Path) -> None:
    store = Store(home)
    _, config = good_image(store)
    ref = push_hostile(registry, store, "hostile/labels", mutated(config, ("config", "Labels"), ["a=b"]))
    fresh = open_store(tmp_path / "fresh")
    with pytest.raises(MalformedImageError, match=r"config\.Labels is \['a=b'\], not an object"):
        pull_image(fresh, parse_reference(ref), client(registry), platform="linux/amd64")
    assert fresh.images() == []  # refused before any ref moved


@needs_registry
@pytest.mark.parametrize("case", sorted(FOUND))
def test_item03_hostile_configs_are_refused_at_pull_and_remote_inspect(registry, home: Path, tmp_path: Path,
                                                                       case: str) -> None:
    path, value, fragment = FOUND[case]
    store = Store(home)
    _, config = good_image(store)
    ref = push_hostile(registry, store, f"hostile/{case}", mutated(config, path, value))
    fresh = tmp_path / "fresh"
    for args in (["inspect", ref], ["pull", ref], ["run", ref, "--dry-run"]):
        out = run_cli([*args, "--plain-http"], fresh)
        assert out.code == 1 and "Traceback" not in out.err, (args, out.err)
        assert fragment in out.err and "image config" in out.err, (args, out.err)
    assert Store(fresh).images() == []


def test_item03_one_bad_image_does_not_break_list(home: Path) -> None:
    store = Store(home)
    _, config = good_image(store)
    for case, (path, value, _) in sorted(FOUND.items()):
        plant(store, f"bad/{case}:1", mutated(config, path, value))
    plant(store, "bad/not-json:1", b"{ not json")
    plant(store, "bad/deep:1", b"[" * 100_000 + b"]" * 100_000)
    code, out, err = bounded_cli(home, "list")
    assert code == 0, err
    assert out.splitlines()[1].split()[:2] == ["good", "1"] and len(out.splitlines()) == 2, out
    for case in [*FOUND, "not-json", "deep"]:
        assert f"bad/{case}:1" in err, err  # each bad image named in a warning, the list still printed
    code, out, err = bounded_cli(home, "list", "--format", "json")
    assert code == 0 and [row["name"] for row in json.loads(out)] == ["good"]
    # the other commands on the good image still work; on a bad one each is a clear error
    assert bounded_cli(home, "inspect", GOOD)[0] == 0
    for case in FOUND:
        for args in (["inspect", f"bad/{case}:1"], ["run", f"bad/{case}:1", "--dry-run"],
                     ["estimate", f"bad/{case}:1"]):
            code, _, err = bounded_cli(home, *args)
            assert code == 1 and "image config" in err, (args, err)


def test_item03_cmd_string_not_split_into_characters(home: Path) -> None:
    store = Store(home)
    _, config = good_image(store)
    plant(store, "bad/cmd:1", mutated(config, ("config", "Cmd"), "-m /models/tiny.gguf"))
    code, out, err = bounded_cli(home, "run", "bad/cmd:1", "--dry-run")
    assert code == 1 and out == ""
    assert "config.Cmd is the string '-m /models/tiny.gguf', not a list of strings" in err
    with pytest.raises(MalformedImageError, match="not a list of strings"):
        ImageConfig.parse(mutated(config, ("config", "Cmd"), "-m x"), "img")


def test_item03_from_a_hostile_image_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    store = Store(home)
    _, config = good_image(store)
    plant(store, "bad/model:1", mutated(config, ("config", "Model"), "/models/tiny.gguf"))
    context = write_context(tmp_path / "ctx", "FROM bad/model:1\nLABEL x=y\n")
    out = run_cli(["build", "-t", "derived:1", str(context)], home)
    assert out.code == 1 and "Traceback" not in out.err
    assert "config.Model is '/models/tiny.gguf', not an object" in out.err


def test_item03_hostile_store_index_entries_leave_the_others_listed(home: Path) -> None:
    index_path = home / "index.json"
    index = json.loads(index_path.read_text())
    good_entry = index["manifests"][0]
    index["manifests"] += ["not an object", {"digest": 12}, {**good_entry, "annotations": ["x"]},
                           {**good_entry, "size": "9"}, {**good_entry, "digest": "sha256:../../etc"}]
    index_path.write_text(json.dumps(index))
    code, out, err = bounded_cli(home, "list")
    assert code == 0 and out.splitlines()[1].split()[:2] == ["good", "1"]
    assert err.count("index.json entry") == 5, err
    assert bounded_cli(home, "tag", GOOD, "again:1")[0] == 0  # writers keep working, and keep the others
    assert bounded_cli(home, "prune")[0] == 0
    assert bounded_cli(home, "inspect", "again:1")[0] == 0


# --- item 4: images without history ------------------------------------------------------------------


def test_item04_from_image_without_history_builds(home: Path, tmp_path: Path) -> None:
    store = Store(home)
    _, config = good_image(store)
    del config["history"]  # optional in OCI
    plant(store, "nohistory:1", config)
    context = write_context(tmp_path / "ctx", "FROM nohistory:1\nCAT <<EOF /notes.txt\nhi\nEOF\nLABEL a=b\n")
    config = do_build(store, context, tags=["derived:1"]).image.config
    history = config["history"]
    assert next(h for h in history if not h.get("empty_layer")) == {}  # the base layer's entry, synthesized
    assert sum(1 for h in history if not h.get("empty_layer")) == len(config["rootfs"]["diff_ids"]) == 2
    code, out, _ = bounded_cli(home, "inspect", "nohistory:1")
    assert code == 0 and "Layers:" in out


def test_item04_history_that_does_not_match_the_layers_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    store = Store(home)
    _, config = good_image(store)
    config["history"] = [{"created_by": "COPY a /"}, {"created_by": "COPY b /"}]  # two layers named, one there
    plant(store, "mismatch:1", config)
    context = write_context(tmp_path / "ctx", "FROM mismatch:1\nLABEL a=b\n")
    out = run_cli(["build", str(context)], home)
    assert out.code == 1 and "history has 2 layer entries for 1 layers" in out.err and "Traceback" not in out.err


# --- item 12: one symlink rule for build and pull -----------------------------------------------------


def _tar_with(members: Sequence[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, target in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def _build_accepts(path: str, target: str) -> bool:
    try:
        write_layer([LayerEntry(path, "symlink", 0o777, linkname=target)], io.BytesIO(), compress=False, mtime=0)
    except UnsafeSymlinkError:
        return False
    return True


def _pull_accepts(path: str, target: str) -> bool:
    try:
        list(iter_layer_members(io.BytesIO(_tar_with([(path, target)])), mt.OCI_LAYER_TAR))
    except UnsafeSymlinkError:
        return False
    return True


_PARTS = st.sampled_from(["a", "b", "..", ".", "", "models", "etc"])
_LINK_PATHS = st.lists(st.sampled_from(["a", "b", "models", "d"]), min_size=1, max_size=4).map("/".join)
_TARGETS = st.tuples(st.booleans(), st.lists(_PARTS, min_size=1, max_size=6)).map(
    lambda t: ("/" if t[0] else "") + "/".join(t[1])).filter(bool)


@HYPOTHESIS
@given(path=_LINK_PATHS, target=_TARGETS)
def test_item12_build_and_pull_agree_on_symlinks(path: str, target: str) -> None:
    """Whatever link a layer we write may hold, pull reads it back, and what pull refuses we never write."""
    assert _build_accepts(path, target) == _pull_accepts(path, target)
    if target.startswith("/"):
        assert not _build_accepts(path, target)


_MEMBERS = st.lists(st.tuples(st.sampled_from(["file", "symlink", "dir"]), _LINK_PATHS, _TARGETS), min_size=1,
                    max_size=6)


@HYPOTHESIS
@given(members=_MEMBERS)
def test_item12_extraction_never_writes_through_a_symlink_to_outside(tmp_path_factory: pytest.TempPathFactory,
                                                                     members: list[tuple[str, str, str]]) -> None:
    """Materialising any layer of files, directories and symlinks writes only below its directory, and
    leaves no symlink there that resolves outside it."""
    from ggufpack.oci.extract import extract_layer

    work = tmp_path_factory.mktemp("extract")
    (work / "outside").mkdir()
    (work / "outside" / "secret").write_bytes(b"secret")
    dest = work / "root" / "a" / "b"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, target in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, target
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            else:
                info.size = 1
            tar.addfile(info, io.BytesIO(b"x") if kind == "file" else None)
    with contextlib.suppress(GGUFPackError):
        extract_layer(io.BytesIO(buf.getvalue()), dest, mt.OCI_LAYER_TAR)
    found = [Path(d, name) for d, dirs, files in os.walk(work) for name in dirs + files]
    others = {p.relative_to(work).as_posix() for p in found if p != dest and dest not in p.parents}
    assert others <= {"outside", "outside/secret", "root", "root/a"}, others
    assert (work / "outside" / "secret").read_bytes() == b"secret"
    for path in found:
        if dest in path.parents and path.is_symlink():
            resolved = Path(os.path.realpath(path))
            assert resolved == dest.resolve() or dest.resolve() in resolved.parents, (path, os.readlink(path))


@needs_registry
def test_item12_context_symlinks_out_of_the_context_are_refused_and_the_rest_round_trips(
        registry, gguf_bytes: bytes, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", PACKERFILE + "COPY . /ctx/\n", {"tiny.gguf": gguf_bytes,
                                                                             "docs/a.txt": b"a"})
    os.symlink("/etc/passwd", context / "passwd")
    store = open_store(tmp_path / "home")
    with pytest.raises(GGUFPackError, match=f"{context / 'passwd'} is a symlink to '/etc/passwd': an absolute"):
        do_build(store, context, tags=["links:1"])
    os.unlink(context / "passwd")
    os.symlink("../../outside", context / "docs" / "up")
    with pytest.raises(GGUFPackError, match=f"{context / 'docs' / 'up'} is a symlink to '../../outside'"):
        do_build(store, context, tags=["links:1"])
    os.unlink(context / "docs" / "up")
    os.symlink("a.txt", context / "docs" / "same-dir")
    os.symlink("../tiny.gguf", context / "docs" / "model")
    result = do_build(store, context, tags=["links:1"])
    # what the build kept, pull accepts: pushed and pulled into a fresh store, same digest
    target = parse_reference(f"{registry.host}/links/ok:1")
    push_image(store, "links:1", target, client(registry))
    fresh = open_store(tmp_path / "fresh")
    assert pull_image(fresh, target, client(registry), platform="linux/amd64").digest == result.descriptor.digest


@needs_registry
@pytest.mark.parametrize(("members", "fragment"), [
    ([("ctx/passwd", "/etc/passwd")], "has an absolute target"),
    ([("ctx/up", "../../etc")], "points outside the image root"),
    ([("self", "."), ("up", "self/..")], "points outside the image root"),
    ([("a", "b"), ("b", "a")], "does not resolve"),
], ids=["absolute", "dotdot", "chain", "loop"])
def test_item12_pull_refuses_what_the_build_refuses(registry, home: Path, gguf_bytes: bytes, tmp_path: Path,
                                                    members: list[tuple[str, str]], fragment: str) -> None:
    store = Store(home)
    manifest, config = good_image(store)
    layer = _tar_with(members)
    manifest["layers"].append({"mediaType": mt.OCI_LAYER_TAR, "digest": sha256_digest(layer), "size": len(layer)})
    config["rootfs"]["diff_ids"].append(sha256_digest(layer))
    config["history"].append({"created_by": "COPY links /"})
    data = canonical_json(config)
    manifest["config"] = {"mediaType": mt.OCI_CONFIG, "digest": sha256_digest(data), "size": len(data)}
    blobs = [data, *(store.read_blob(d["digest"]) for d in manifest["layers"][:-1]), layer]
    repository = f"links/{len(members)}-{fragment.split()[0]}"
    push_documents(registry, repository, "1", blobs, manifest)
    fresh = open_store(tmp_path / "fresh")
    with pytest.raises(UnsafeSymlinkError, match=fragment):
        pull_image(fresh, parse_reference(f"{registry.host}/{repository}:1"), client(registry), platform="linux/amd64")
    assert fresh.images() == []
    # the same links in a build context: the build refuses them too
    context = write_context(tmp_path / "ctx", PACKERFILE + "COPY . /\n", {"tiny.gguf": gguf_bytes})
    for name, target in members:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, context / name)
    with pytest.raises(GGUFPackError, match="symlink"):
        do_build(open_store(tmp_path / "build-home"), context, tags=["x:1"])


# --- item 13: terminal escapes --------------------------------------------------------------------------


def test_item13_terminal_escapes_rendered_escaped(tmp_path: Path) -> None:
    hostile = "Evil\x1b]0;pwned\x07\x1b[31mred\x9b2J\u202eedoc\u2066x\u2028y\x7f"
    model = tiny_gguf_bytes(tmp_path / "g", extra_kv={"general.name": hostile, "general.description": hostile})
    home = tmp_path / "home"
    store = open_store(home)
    do_build(store, write_context(tmp_path / "ctx", PACKERFILE + f"LABEL note={json.dumps(hostile)}\n",
                                  {"tiny.gguf": model}), tags=["esc:1"])
    assert store.read_json(store.resolve("esc:1").descriptor.digest)["annotations"]["gguf.model.name"] == hostile
    outputs = [bounded_cli(home, *args)[1] for args in (["list"], ["list", "--format", "json"], ["inspect", "esc:1"],
                                                         ["inspect", "esc:1", "--format", "json"])]
    for out in outputs:
        assert not any(c in out for c in RAW_CONTROLS), ascii(out)
    assert "Evil\u241b]0;pwned\u2407\u241b[31mred\ufffd2J\ufffdedoc" in outputs[2]  # visible, not executed
    as_json = json.loads(outputs[3])
    assert as_json["labels"]["gguf.model.name"] == hostile  # JSON escapes keep the value exact


# --- item 10 (part): Docker Model Runner configs ---------------------------------------------------------


def _dmr_push(reg: LocalRegistry, repository: str, config: Any, gguf: bytes) -> str:
    data = as_bytes(config)
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                "config": {"mediaType": mt.DOCKER_AI_CONFIG, "digest": sha256_digest(data), "size": len(data)},
                "layers": [{"mediaType": mt.DOCKER_AI_GGUF, "digest": sha256_digest(gguf), "size": len(gguf)}]}
    push_documents(reg, repository, "1", [data, gguf], manifest)
    return f"{reg.host}/{repository}:1"


@needs_registry
def test_item10_dmr_context_size_not_a_number(registry, gguf_bytes: bytes, tmp_path: Path) -> None:
    ref = _dmr_push(registry, "dmr/ctx", {"config": {"format": "gguf", "context_size": "abc"}}, gguf_bytes)
    out = run_cli(["pull", ref, "--plain-http"], tmp_path / "home")
    assert out.code == 1 and "Traceback" not in out.err
    assert "context_size is 'abc', not a number of tokens" in out.err
    assert Store(tmp_path / "home").images() == []


@needs_registry
def test_item10_dmr_config_list(registry, gguf_bytes: bytes, tmp_path: Path) -> None:
    ref = _dmr_push(registry, "dmr/list", [{"config": {"format": "gguf"}}], gguf_bytes)
    out = run_cli(["pull", ref, "--plain-http"], tmp_path / "home")
    assert out.code == 1 and "Traceback" not in out.err
    assert "the Docker model config is [{'config': {'format': 'gguf'}}], not a JSON object" in out.err
    assert Store(tmp_path / "home").images() == []


# --- property-based: random mutations of a valid config, manifest, index entry --------------------------


_HOSTILE_TEXT = ["\x1b[2J\x1b]0;x\x07", "\u202e\u2066", "\ud800", "a" * 5000, "", "sha256:" + "0" * 64, "../../etc"]
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**64, 2**63, -1, 10**300, 0]), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(_HOSTILE_TEXT),
)
_VALUES = st.recursive(
    _SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)
#: JSON no Python value serializes to: absurd nesting, numbers past float or int-parsing limits
_RAW = ["[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000, "1e400", "-1e400", "9" * 5000, "[" * 60 + "]" * 60]
_CONFIG_PATHS: list[tuple[str | int, ...]] = [
    (), ("config",), ("config", "Labels"), ("config", "Labels", "gguf.model.name"), ("config", "Size"),
    ("config", "Cmd"), ("config", "Cmd", 0), ("config", "Cmd", 1), ("config", "Model"),
    ("config", "Model", "Parameters"), ("config", "Model", "BitsPerWeight"), ("config", "Model", "FileType"),
    ("config", "Model", "CmdParameterValue"), ("config", "Model", "CmdParameterIndex"),
    ("config", "Model", "Architecture"), ("config", "Model", "GGUF"), ("config", "Model", "GGUF", "header"),
    ("config", "Model", "GGUF", "header", "metadataKV"), ("config", "Model", "GGUF", "header", "metadataKV", 0),
    ("config", "Model", "GGUF", "tensorInfos"), ("config", "Model", "GGUF", "size"), ("config", "Adapters"),
    ("config", "Adapters", 0), ("config", "Drafter"), ("history",), ("history", 0), ("history", 0, "created_by"),
    ("history", 0, "empty_layer"), ("rootfs",), ("rootfs", "diff_ids"), ("rootfs", "diff_ids", 0), ("os",),
    ("architecture",), ("variant",), ("created",),
]
_MANIFEST_PATHS: list[tuple[str | int, ...]] = [
    (), ("config",), ("config", "size"), ("config", "digest"), ("config", "mediaType"), ("layers",), ("layers", 0),
    ("layers", 0, "size"), ("layers", 0, "digest"), ("layers", 0, "mediaType"), ("layers", 1),
    ("annotations",), ("annotations", "org.opencontainers.image.title"), ("manifests",), ("mediaType",),
]
_MUTATION = st.one_of(st.tuples(st.just("value"), _VALUES), st.tuples(st.just("raw"), st.sampled_from(_RAW)))
_PLACEHOLDER = "@@hostile-raw@@"


def _document(base: dict[str, Any], path: tuple[str | int, ...], mutation: tuple[str, Any]) -> bytes:
    kind, value = mutation
    doc = mutated(base, path, _PLACEHOLDER if kind == "raw" else value)
    try:
        data = canonical_json(doc)
    except ValueError:  # a number Python will not print: a raw one instead
        data, kind, value = canonical_json(mutated(base, path, _PLACEHOLDER)), "raw", "9" * 5000
    return data.replace(json.dumps(_PLACEHOLDER).encode(), value.encode()) if kind == "raw" else data


def _check_commands(home: Path, ref: str, commands: Sequence[Sequence[str]]) -> None:
    """Every command ends in success or our error; ``list`` always still shows the good image."""
    code, out, err = bounded_cli(home, "list")
    assert code == 0 and any(line.split()[:2] == ["good", "1"] for line in out.splitlines()[1:]), (out, err)
    assert not any(c in out for c in RAW_CONTROLS)
    for args in commands:
        code, out, err = bounded_cli(home, *args)
        assert not any(c in out for c in RAW_CONTROLS), ascii(out[:2000])


@HYPOTHESIS
@given(path=st.sampled_from(_CONFIG_PATHS), mutation=_MUTATION)
def test_hostile_config_mutations_end_in_our_errors(home: Path, path: tuple[str | int, ...],
                                                    mutation: tuple[str, Any]) -> None:
    store = Store(home)
    _, config = good_image(store)
    data = _document(config, path, mutation)
    assert_clean(run_bounded(_parse_config_bytes, data, budget_mb=512, seconds=30))
    ref = f"mutant/{sha256_digest(data)[7:19]}:1"
    plant(store, ref, data)
    _check_commands(home, ref, [["inspect", ref], ["inspect", ref, "--format", "json"], ["run", ref, "--dry-run"],
                                ["estimate", ref]])


def _parse_config_bytes(data: bytes) -> str:
    from ggufpack.oci.reader import decode_json

    return repr(ImageConfig.parse(decode_json(data, "config"), "img").cmd)


@HYPOTHESIS
@given(path=st.sampled_from(_MANIFEST_PATHS), mutation=_MUTATION)
def test_hostile_manifest_mutations_end_in_our_errors(home: Path, path: tuple[str | int, ...],
                                                      mutation: tuple[str, Any]) -> None:
    store = Store(home)
    manifest, config = good_image(store)
    data = _document(manifest, path, mutation)
    ref = f"mutant/{sha256_digest(data)[7:19]}:1"
    plant(store, ref, config, data)
    _check_commands(home, ref, [["inspect", ref], ["run", ref, "--dry-run"], ["estimate", ref]])


@HYPOTHESIS
@given(field=st.sampled_from(["", "digest", "size", "mediaType", "annotations", "platform"]), value=_VALUES)
def test_hostile_index_entries_end_in_our_errors(home: Path, field: str, value: Any) -> None:
    index_path = home / "index.json"
    index = json.loads(index_path.read_text())
    entry = value if not field else {**index["manifests"][0], field: value}
    if isinstance(entry, dict) and field == "annotations" and isinstance(value, dict):
        entry["annotations"] = {**value, "org.opencontainers.image.ref.name": "docker.io/library/mutant:1"}
    try:
        index_path.write_text(json.dumps({**index, "manifests": [*index["manifests"], entry]}))
    except ValueError:
        return  # not serializable as JSON: no store could hold it
    _check_commands(home, "mutant:1", [["inspect", "mutant:1"], ["run", "mutant:1", "--dry-run"], ["prune"]])


def test_property_cases_fail_on_a_foreign_exception() -> None:
    """The bound helper itself: a traceback in the child is reported as such (the cases above rely on it)."""
    outcome: Outcome = run_bounded(_raise_type_error, budget_mb=64, seconds=10)
    assert outcome.kind == "foreign" and outcome.type_name == "TypeError"
    assert_refused(run_bounded(_raise_ours, budget_mb=64, seconds=10), "ours")


def _raise_type_error() -> None:
    raise TypeError("not ours")


def _raise_ours() -> None:
    raise GGUFPackError("ours")

