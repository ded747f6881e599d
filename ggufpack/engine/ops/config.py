"""The ops of LABEL and CMD: they change the image config, not its files (no layer, no cache key)."""

from __future__ import annotations

from typing import Protocol

from ...packerfile.instructions import CmdCommand, LabelCommand


class ImageSettings(Protocol):
    """What a config op changes: the stage's labels and CMD (the engine's ``StageResult``)."""

    labels: dict[str, str]
    cmd: list[str] | None


class LabelOp:
    def __init__(self, command: LabelCommand) -> None:
        self.command = command

    def apply(self, settings: ImageSettings) -> None:
        settings.labels.update(self.command.labels)


class CmdOp:
    """The last CMD wins: each one replaces the one before (and the base image's)."""

    def __init__(self, command: CmdCommand) -> None:
        self.command = command

    def apply(self, settings: ImageSettings) -> None:
        settings.cmd = list(self.command.args)
