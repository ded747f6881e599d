"""The library API: what the command line does, as functions (``from ggufpack import build``).

The layers below know nothing of each other's neighbours; this module composes them: a build whose
``FROM`` names a registry image gets the registry puller here, so that the engine never imports the
registry client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .engine import BuildResult
from .progress import Progress
from .store import Store


def registry_puller(store: Store, progress: Progress, *, plain_http: bool = False,
                    insecure: bool = False) -> Callable[[str, str], None]:
    """``fetch(name, platform)``: pull the registry image ``name`` into ``store``."""

    def fetch(name: str, platform: str) -> None:
        from .refs import parse_reference
        from .registry.client import RegistryClient
        from .registry.pull import pull_image
        from .registry.settings import settings_for

        ref = parse_reference(name)
        registry = ref.registry or ""
        client = RegistryClient(registry, settings_for(registry, plain_http=plain_http, insecure=insecure))
        pull_image(store, ref, client, platform=platform, progress=progress)

    return fetch


def build(
    context: Path | str = ".",
    *,
    file: Path | str | None = None,
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

    Registry images named by ``FROM`` or ``COPY --from`` are pulled when the store lacks them
    (``plain_http``/``insecure`` as for ``ggufpack pull``). ``backend`` names the llama.cpp backend
    QUANTIZE and IMATRIX run on (default: in-process llama-cpp-python).
    """
    from . import engine

    store = store or Store.open_default()
    progress = progress or Progress("quiet")
    return engine.build(
        context, file=file, tags=tags, build_args=build_args, target=target, labels=labels, no_cache=no_cache,
        platform=platform, store=store, progress=progress, backend=backend,
        fetch_image=registry_puller(store, progress, plain_http=plain_http, insecure=insecure),
    )
