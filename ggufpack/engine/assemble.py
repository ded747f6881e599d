"""The build's final stage committed as the image: the adaptation of a :class:`StageResult` to
:func:`ggufpack.image.commit.commit_image` (the CMD's model files named by the Packerfile's rule)."""

from __future__ import annotations

from ..errors import GGUFPackError
from ..image.commit import AssembledImage, CmdError, check_system_prompt, commit_image
from ..packerfile.instructions import CmdCommand, cmd_roles
from ..store import Store
from .executor import StageResult


def assemble(
    store: Store, state: StageResult, *, platform: str, extra_labels: dict[str, str], source_date_epoch: int | None,
    cmd_command: CmdCommand | None = None,
) -> AssembledImage:
    """Write the config and manifest blobs of the image ``state`` describes. ``cmd_command``: the Packerfile's
    CMD the image ends up with (None: inherited from the base image), where a refused argument is pointed at."""
    roles = cmd_roles(state.cmd, lambda message: GGUFPackError(message)) if state.cmd else ()
    try:
        image = commit_image(
            store, snapshot=state.snapshot, layers=state.layers, history=state.history, cmd=state.cmd, roles=roles,
            labels=state.labels, extra_labels=extra_labels, base=state.base_image, platform=platform,
            source_date_epoch=source_date_epoch,
        )
        check_system_prompt(image.config["config"]["Cmd"], image.model)  # before any ref names the image
        return image
    except CmdError as exc:
        if cmd_command is not None and state.cmd == list(cmd_command.args):
            exc.with_location(cmd_command.position_of(exc.index))
        raise
