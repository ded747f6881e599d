"""``COPY [--from=...] [flags] <src>... <dest>``: files of the context, another stage or an image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Instruction
from .expansion import Expansion
from .files import FILE_FLAGS, FileCommand, file_arguments
from .flags import BOOL, FROM, Flags, FlagSpec


@dataclass(frozen=True)
class CopyCommand(FileCommand):
    keyword: ClassVar[str] = "COPY"
    source_from: str | None = None
    parents: bool = False

    def arguments(self) -> dict[str, Any]:
        return {**self._file_arguments(), "from": self.source_from, "parents": self.parents}

    @property
    def from_ref(self) -> str | None:
        return self.source_from


def parse_copy(ex: Expansion, flags: Flags) -> CopyCommand:
    node = ex.node
    fields = file_arguments(ex, flags)
    source_from = flags.lowered("from")
    if source_from is not None and fields[1]:
        raise ex.error("COPY --from cannot copy heredoc content", flags.position("from"))
    return CopyCommand(node.position, node.original, *fields, source_from, flags.boolean("parents"))


COPY = Instruction(
    "COPY", "copy files of the build context, of another stage or of an image",
    "COPY [flags] <src>... <dest>", CopyCommand, parse_copy, op="files:CopyOp", heredocs=True,
    flags=(
        FROM, *FILE_FLAGS,
        FlagSpec("parents", "keep the sources' directories below the destination (a/b.txt → <dest>/a/b.txt)",
                 BOOL, False),
    ),
    examples=("COPY tokenizer.json /models/", "COPY --from=f16 /models/tiny.F16.gguf /models/"),
)
