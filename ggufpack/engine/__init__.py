"""The local build engine: Packerfile → plan → execution → image in the store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import GGUFPackError, UsageError
from ..oci.descriptor import Descriptor
from ..oci.image import source_date_epoch
from ..packerfile import DEFAULT_FILENAME
from ..plan import Plan, plan_file
from ..progress import Progress
from ..refs import canonical_reference
from ..store import Store
from .assemble import AssembledImage, assemble
from .executor import BuildOptions, BuildStats, Executor


@dataclass(frozen=True)
class BuildResult:
    """What a build made: the manifest descriptor, its refs, and how many ops ran or hit the cache."""

    descriptor: Descriptor
    image: AssembledImage
    refs: tuple[str, ...]
    stats: BuildStats
    plan: Plan

    @property
    def image_id(self) -> str:
        return self.descriptor.hex


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
    backend: str | None = None,
    fetch_image: Callable[[str, str], None] | None = None,
) -> BuildResult:
    """Build the image a Packerfile describes into the store, tagging it with ``tags``.

    Registry images named by ``FROM`` or ``COPY --from`` that the store lacks are handed to
    ``fetch_image(name, platform)`` (the library API passes the registry puller; the engine itself never
    talks to a registry). ``backend`` names the llama.cpp backend QUANTIZE and
    IMATRIX run on (default: in-process llama-cpp-python).
    """
    context_dir = Path(context)
    if not context_dir.is_dir():
        raise UsageError(f"build context {context_dir} is not a directory")
    refs = tuple(canonical_reference(tag) for tag in tags)
    path = Path(file) if file is not None else context_dir / DEFAULT_FILENAME
    plan = plan_file(path, display_name=str(path), build_args=build_args, target=target, platform=platform)
    store = store or Store.open_default()
    progress = progress or Progress("quiet")
    options = BuildOptions(no_cache=no_cache, progress=progress, source_date_epoch=source_date_epoch(),
                           fetch_image=None if fetch_image is None else _for_platform(fetch_image, plan.platform),
                           backend=backend)
    with store.lease():
        executor = Executor(store, plan, context_dir, options)
        state = executor.run()
        image = assemble(store, state, platform=plan.platform, extra_labels=dict(labels or {}),
                         source_date_epoch=options.source_date_epoch, cmd_command=plan.cmd.command)
        for ref in refs:
            store.set_ref(ref, image.descriptor, files=image.files)
    if not refs:
        options.progress.log("note: no -t given; the image is kept only until 'ggufpack prune'")
    return BuildResult(image.descriptor, image, refs, executor.stats, plan)


def _for_platform(fetch: Callable[[str, str], None], platform: str) -> Callable[[str], None]:
    return lambda name: fetch(name, platform)


__all__ = ["BuildResult", "GGUFPackError", "build"]
