"""The build's final stage committed as the image: the adaptation of a :class:`StageResult` to
:func:`ggufpack.image.commit.commit_image` (the CMD's model files named by the Packerfile's rule)."""

from __future__ import annotations

from ..errors import GGUFPackError
from ..image.commit import AssembledImage, commit_image
from ..packerfile.instructions import cmd_roles
from ..store import Store
from .executor import StageResult


def assemble(
    store: Store, state: StageResult, *, platform: str, extra_labels: dict[str, str], source_date_epoch: int | None
) -> AssembledImage:
    """Write the config and manifest blobs of the image ``state`` describes."""
    roles = cmd_roles(state.cmd, lambda message: GGUFPackError(message)) if state.cmd else ()
    return commit_image(
        store, snapshot=state.snapshot, layers=state.layers, history=state.history, cmd=state.cmd, roles=roles,
        labels=state.labels, extra_labels=extra_labels, base=state.base_image, platform=platform,
        source_date_epoch=source_date_epoch,
    )
