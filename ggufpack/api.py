"""The library API: what the command line does, as functions (``from ggufpack import build``).

``build``, ``convert``, ``quantize``, ``push``, ``pull``, ``estimate`` and ``run``: the CLI calls them
and only parses arguments and prints. The layers below know nothing of each other's neighbours; this
module composes them: a build whose ``FROM`` names a registry image gets the registry puller here, so
that the engine never imports the registry client. Every function raises
:class:`ggufpack.errors.GGUFPackError` (a :class:`~ggufpack.errors.UsageError` for a wrong argument)
with a message fit for a user; nothing else is expected of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .errors import UsageError
from .progress import Progress
from .run import DEFAULT_PORT, DEFAULT_TIMEOUT_S
from .store import Store

if TYPE_CHECKING:
    import subprocess

    from .convert.api import ConvertResult
    from .engine import BuildResult
    from .estimate import Row
    from .refs import Reference
    from .registry.client import RegistryClient
    from .registry.pull import PullResult
    from .registry.push import PushResult

StrPath = str | PathLike[str]



def registry_client(registry: str, *, plain_http: bool = False, insecure: bool = False) -> RegistryClient:
    """A client for ``registry`` (``host[:port]``) with its saved settings and credentials; ``plain_http``
    and ``insecure`` add to the saved settings, as ``--plain-http``/``--insecure`` do."""
    from .registry.client import RegistryClient
    from .registry.settings import settings_for

    return RegistryClient(registry, settings_for(registry, plain_http=plain_http, insecure=insecure))


def registry_puller(store: Store, progress: Progress, *, plain_http: bool = False,
                    insecure: bool = False) -> Callable[[str, str], None]:
    """``fetch(name, platform)``: pull the registry image ``name`` into ``store``."""

    def fetch(name: str, platform: str) -> None:
        from .refs import parse_reference
        from .registry.pull import pull_image

        ref = parse_reference(name)
        client = registry_client(ref.registry or "", plain_http=plain_http, insecure=insecure)
        pull_image(store, ref, client, platform=platform, progress=progress)

    return fetch


def _registry_ref(name: str, what: str) -> Reference:
    from .refs import parse_reference

    ref = parse_reference(name)
    if ref.registry is None:
        raise UsageError(f"{what} {name!r} names no registry: write REGISTRY/NAME[:TAG], e.g. localhost:5000/{name}")
    return ref


def _platform(platform: str | None) -> str:
    from .oci.platform import DEFAULT_PLATFORM

    return platform or DEFAULT_PLATFORM


def build(
    context: StrPath = ".",
    *,
    file: StrPath | None = None,
    tags: Sequence[str] = (),
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    labels: Mapping[str, str] | None = None,
    no_cache: bool = False,
    platform: str | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
    plain_http: bool = False,
    insecure: bool = False,
    backend: str | None = None,
) -> BuildResult:
    """Build the image a Packerfile describes into the store (default: ``GGUFPACK_HOME``), tagged ``tags``.

    ``file`` is the Packerfile (default: ``CONTEXT/GGUFPackerfile``). Registry images named by ``FROM``
    or ``COPY --from`` are pulled when the store lacks them (``plain_http``/``insecure`` as for
    :func:`pull`). ``backend`` names the llama.cpp backend QUANTIZE and IMATRIX run on (default:
    in-process llama-cpp-python).

    Returns a :class:`ggufpack.engine.BuildResult`: the manifest ``descriptor``, the ``refs`` set,
    the op ``stats`` (run, cached) and the ``plan``. Raises a :class:`~ggufpack.errors.PackerfileError`
    (``FILE:LINE:COL``) for a Packerfile that does not plan, and a located
    :class:`~ggufpack.errors.GGUFPackError` for an instruction that fails.
    """
    from . import engine

    store = store or Store.open_default()
    progress = progress or Progress("quiet")
    return engine.build(
        context, file=file, tags=tags, build_args=build_args, target=target, labels=labels, no_cache=no_cache,
        platform=platform, store=store, progress=progress, backend=backend,
        fetch_image=registry_puller(store, progress, plain_http=plain_http, insecure=insecure),
    )


def convert(source: StrPath, dest: StrPath, *, progress: Progress | None = None, **options: Any) -> ConvertResult:
    """Convert the Hugging Face checkpoint (or PEFT LoRA adapter) directory ``source`` to the GGUF file ``dest``.

    ``options`` are CONVERT's: ``out_type`` (``"F16"`` by default; ``F32``, ``BF16``, ``Q8_0``, ...,
    ``AUTO``), ``model_class`` (``"model"`` or ``"lora"``), ``base`` (a LoRA's base model directory),
    ``model_name`` and ``split_max_size`` (bytes per shard); see :func:`ggufpack.convert.api.convert`.

    Returns a :class:`ggufpack.convert.api.ConvertResult` (``path``, every file in ``paths``, the
    architecture, type, tensor and parameter counts, size, warnings). Raises a
    :class:`~ggufpack.errors.GGUFPackError` for a checkpoint it cannot convert; ``dest`` is then untouched.
    """
    from .convert.api import convert as convert_checkpoint

    return convert_checkpoint(Path(source), Path(dest), progress=progress or Progress("quiet"), **options)


def quantize(source: StrPath, dest: StrPath, type: str, *, backend: str | None = None,
             progress: Progress | None = None, **options: Any) -> list[Path]:
    """Quantize the GGUF file ``source`` (shard 1 of a split model finds the others) to ``type`` in ``dest``.

    ``options`` are the other fields of :class:`ggufpack.options.quantize.QuantizeOptions` (the
    ``llama-quantize`` flags: ``pure``, ``imatrix``, ``tensor_types``, ``keep_split``, ...).
    ``backend`` names the llama.cpp backend (default: llama-cpp-python in this process; ``numpy``:
    the fallback quantizer).

    Returns the files written: ``[dest]``, or with ``keep_split=True`` the shards named after it.
    Raises a :class:`~ggufpack.errors.UsageError` for a bad option or type and a
    :class:`~ggufpack.errors.GGUFPackError` when llama.cpp fails; nothing is left at ``dest`` then.
    """
    from .options.quantize import QuantizeOptions
    from .quantize.api import quantize_model

    try:
        chosen = QuantizeOptions(type=type, **options)
    except TypeError as exc:
        raise UsageError(f"quantize: {exc}") from None
    return quantize_model(Path(source), Path(dest), chosen, backend=backend, progress=progress or Progress("quiet"))


def push(
    image: str,
    target: str | None = None,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
    plain_http: bool = False,
    insecure: bool = False,
    format: str = "image",
    jobs: int | None = None,
    chunk_size: int | None = None,
    stop: threading.Event | None = None,
) -> PushResult:
    """Push the stored image ``image`` (a ref or ID) to the registry reference ``target`` (default:
    ``image`` itself, which must then name a registry).

    ``format="modelpack"`` pushes the image's CNCF ModelPack artifact instead. Uploads resume where
    a cut push left them; ``stop`` (set from another thread) ends the push at the next chunk.

    Returns a :class:`ggufpack.registry.push.PushResult` (the pushed ``reference``, its manifest
    ``digest`` and the blob counts). Raises a :class:`~ggufpack.errors.GGUFPackError` (a
    :class:`~ggufpack.registry.client.RegistryError` for what the registry refused or a login it needs).
    """
    from .registry.push import CHUNK_SIZE, JOBS, push_image

    ref = _registry_ref(target or image, "push target")
    store = store or Store.open_default()
    client = registry_client(ref.registry or "", plain_http=plain_http, insecure=insecure)
    return push_image(store, image, ref, client, progress or Progress("quiet"), chunk_size=chunk_size or CHUNK_SIZE,
                      jobs=jobs or JOBS, stop=stop, fmt=format)


def pull(
    ref: str,
    *,
    store: Store | None = None,
    platform: str | None = None,
    progress: Progress | None = None,
    plain_http: bool = False,
    insecure: bool = False,
    jobs: int | None = None,
) -> PullResult:
    """Pull the registry image ``ref`` (``REGISTRY/NAME[:TAG|@DIGEST]``) into the store, named ``ref``.

    A ModelPack, Docker Model Runner or Ollama artifact is imported as an image. ``platform`` picks
    from a multi-platform index (default: ``linux/amd64``,
    :data:`~ggufpack.oci.platform.DEFAULT_PLATFORM`, on every machine). Blobs the store has are not fetched again.

    Returns a :class:`ggufpack.registry.pull.PullResult` (``reference``, manifest ``digest``, the
    artifact ``format`` and the blob counts). Raises a :class:`~ggufpack.errors.GGUFPackError`, the
    store left as it was, for what the registry refuses or sends wrong.
    """
    from .registry.pull import JOBS, pull_image

    parsed = _registry_ref(ref, "image")
    client = registry_client(parsed.registry or "", plain_http=plain_http, insecure=insecure)
    return pull_image(store or Store.open_default(), parsed, client, platform=_platform(platform),
                      progress=progress or Progress("quiet"), jobs=jobs or JOBS)


@dataclass(frozen=True)
class Estimate:
    """What :func:`estimate` found: the model it read (a file path or an image reference) and one
    row per offload count (one row, all layers offloaded, unless ``gpu_layers_step`` asks for more)."""

    source: str
    rows: list[Row]
    #: the runtime the figures are for (``llama-cpp-python`` or ``llama-server``)
    runtime: str = "llama-server"


def estimate(
    target: StrPath,
    *,
    gpu_layers_step: int | None = None,
    store: Store | None = None,
    platform: str | None = None,
    plain_http: bool = False,
    insecure: bool = False,
    runtime: str = "auto",
    backend: str | None = None,
    gpus: int | None = None,
    **settings: Any,
) -> Estimate:
    """Estimate the RAM and VRAM llama.cpp's server allocates for ``target``: a GGUF file (any shard),
    a stored image (ref or ID) or a registry image (its manifest and config only are fetched).

    ``settings`` are the fields of :class:`ggufpack.estimate.params.Options` (``ctx_size``,
    ``batch_size``, ``parallel``, ``cache_type_k``, ``gpu_layers``, ``tensor_split``, ...); each
    given one overrides the image CMD's, which overrides llama-server's defaults.
    ``gpu_layers_step=N`` gives one row per N offloaded layers (0: every count).

    By default the estimate is of what :func:`run` would allocate on this machine: ``runtime="auto"``
    is the runtime ``run`` picks for the image (llama-cpp-python's server, one slot, unless the CMD
    needs llama-server), with that runtime's settings, on the GPUs it can use here (none for a CPU
    build: every layer on the host). ``runtime="llama-server"`` gives llama-server's figures (4 slots
    sharing the cache unless ``-np``), ``backend`` the llama.cpp build whose devices count, ``gpus``
    another machine's number of GPUs.

    Returns an :class:`Estimate`: the ``source`` read and one :class:`ggufpack.estimate.Row` per
    offload count in ``rows`` (``row.to_json()``: every component in bytes).
    Raises a :class:`~ggufpack.errors.UsageError` for an unknown or invalid setting and a
    :class:`~ggufpack.errors.GGUFPackError` for a target it cannot read.
    """
    from .estimate import Options, resolve
    from .estimate import estimate as estimate_rows
    from .estimate.inputs import load
    from .estimate.machine import runtime_for, runtime_gpus

    known = {f.name for f in fields(Options)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UsageError(f"estimate: unknown setting(s) {', '.join(unknown)}: use {', '.join(sorted(known))}")
    inputs = load(str(target), lambda: store or Store.open_default(),
                  lambda registry: registry_client(registry, plain_http=plain_http, insecure=insecure),
                  _platform(platform))
    chosen = runtime_for(inputs.cmd, settings, runtime, backend)
    options = resolve(inputs.cmd, settings, runtime=chosen, drafter=inputs.drafter is not None,
                      gpus=runtime_gpus(chosen, backend) if gpus is None else gpus)
    return Estimate(inputs.source, estimate_rows(inputs, options, gpu_layers_step), chosen)


@dataclass
class Server:
    """A model server that :func:`run` started: it keeps running, detached, until :meth:`stop` (or
    ``ggufpack stop ID``); ``ggufpack ps`` lists it. As a context manager it stops on leaving."""

    id: str
    image: str
    runtime: str
    #: the server's base URL; the OpenAI-compatible API is under ``url + "/v1"``
    url: str
    pid: int
    #: the server's output
    log: Path
    notes: tuple[str, ...] = ()
    _home: Path = field(default=Path(), repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and forget it; nothing happens if it is gone already."""
        from .run import detached

        for record in detached.live(self._home):
            if record.id == self.id:
                detached.stop(self._home, record)
        if self._process is not None and self._process.poll() is None:
            self._process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def run(
    image: str,
    *,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    server_args: Sequence[str] = (),
    runtime: str = "auto",
    backend: str | None = None,
    docker_image: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    platform: str | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
    plain_http: bool = False,
    insecure: bool = False,
) -> Server:
    """Serve the image ``image`` (a ref or ID; a registry ref the store lacks is pulled) behind an
    OpenAI-compatible API on ``host:port``, with the image's CMD plus ``server_args``.

    ``runtime`` is ``auto`` (llama-cpp-python's server when installed, else an installed
    llama-server), ``llama-cpp-python``, ``llama-server`` (of ``backend``) or ``docker``. The image's
    files stay in the store while the server runs, whatever ``remove`` or ``prune`` do meanwhile.

    Returns a :class:`Server` once the server answers (it runs on, detached, as ``ggufpack run
    --detach`` starts it). Raises a :class:`~ggufpack.errors.GGUFPackError` when the port is taken,
    the image has no model to serve, or the server exits or does not answer within ``timeout``
    seconds (then it is stopped, and the message quotes its log).
    """
    from dataclasses import replace

    from .run import detached
    from .run.image import hold_image
    from .run.runtimes import plan_launch
    from .run.server import check_port, serve_detached

    store = store or Store.open_default()
    progress = progress or Progress("quiet")
    chosen_platform = _platform(platform)
    fetch = registry_puller(store, progress, plain_http=plain_http, insecure=insecure)
    run_id = detached.new_id()
    runnable, lease = hold_image(store, image, chosen_platform, lambda name: fetch(name, chosen_platform), run_id)
    try:
        launch = plan_launch(runnable, runtime, host=host, port=port, extra=list(server_args), backend=backend,
                             docker_image=docker_image)
        assert lease.fd is not None
        launch = detached.mark(replace(launch, keep_fds=(lease.fd,)), run_id)
        check_port(host, port)
        log = detached.prepare_log(store.root, run_id)

        def remember(proc: subprocess.Popen[bytes]) -> None:
            record = detached.record_for(run_id, proc.pid, launch, ref=image, image=runnable.digest)
            if record is not None:
                detached.save(store.root, record)

        process = serve_detached(launch, timeout, log, remember, lambda: detached.forget_record(store.root, run_id))
        lease.hand_over()  # the server holds it now, for as long as it runs
    finally:
        lease.release()  # a no-op once handed over
    return Server(run_id, image, launch.runtime, launch.url, process.pid, log, tuple(launch.notes), store.root,
                  process)
