"""``ADD [flags] <src>... <dest>``: context paths, http(s) URLs (verified by ``--checksum``), git repositories."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import UsageError
from ...options.checksum import parse_checksum
from .base import Instruction
from .expansion import Expansion
from .files import FILE_FLAGS, FileCommand, file_arguments
from .flags import BOOL, Flags, FlagSpec


@dataclass(frozen=True)
class AddCommand(FileCommand):
    keyword: ClassVar[str] = "ADD"
    checksum: str | None = None
    keep_git_dir: bool = False

    def arguments(self) -> dict[str, Any]:
        return {**self._file_arguments(), "checksum": self.checksum, "keep_git_dir": self.keep_git_dir}


def parse_add(ex: Expansion, flags: Flags) -> AddCommand:
    node = ex.node
    fields = file_arguments(ex, flags)
    sources, contents = fields[0], fields[1]
    checksum = flags.string("checksum")
    if checksum is not None:
        position = flags.position("checksum")
        try:
            algo, hexdigest = parse_checksum(checksum)  # the rules the download applies
        except UsageError as exc:
            raise ex.error(str(exc), position) from None
        checksum = f"{algo}:{hexdigest}"
        if len(sources) != 1 or contents or not re.match(r"^https?://", sources[0]):
            raise ex.error("--checksum needs exactly one http(s):// source", position)
    return AddCommand(node.position, node.original, *fields, checksum, flags.boolean("keep-git-dir"))


ADD = Instruction(
    "ADD", "add files from the build context, an http(s) URL or a git repository",
    "ADD [flags] <src>... <dest>", AddCommand, parse_add, op="files:AddOp", heredocs=True,
    flags=(
        FlagSpec("keep-git-dir", "keep the .git directory of a git source", BOOL, False),
        FlagSpec("checksum", "the digest the one http(s) source must have (sha256, sha384 or sha512)",
                 metavar="algo:hex"),
        *FILE_FLAGS,
    ),
    examples=("ADD --checksum=sha256:<64 hex digits> https://example.org/tiny.gguf /models/",
              "ADD https://github.com/example/prompts.git#v1 /prompts/"),
)
