"""One llama-server option as llama.cpp's ``common/arg.cpp`` declares it (the record of :mod:`.llama_server`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: value kinds: ``flag`` takes no value (``negations`` are its ``--no-...`` spellings); ``int`` and
#: ``float`` are read as numbers (``parse`` names the C++ function); ``choice`` is one of ``choices``;
#: ``path`` a file or directory; ``string`` anything
KINDS = ("flag", "int", "float", "choice", "path", "string")


@dataclass(frozen=True)
class ServerOption:
    """An option of llama-server, from its declaration in llama.cpp's sources.

    A field the generator could not read from the sources is ``None`` (never a guess).
    """

    #: the first ``--long`` spelling (the first spelling when there is none): the key of parsed values
    name: str
    #: every spelling that sets the option, in the order of the sources (``-c``, ``--ctx-size``)
    spellings: tuple[str, ...]
    kind: str
    #: the first line of the help text, its ``string_format`` evaluated (``<expr>`` where it could not be)
    help: str
    #: how many argv items follow the option: 0 for a flag, 2 for ``--control-vector-layer-range START END``
    nargs: int = 1
    #: the spellings that clear a flag (``--no-jinja``); the value is then False
    negations: tuple[str, ...] = ()
    #: the value hints of the help (``N``, ``FNAME``, ``{none,mean,cls,last,rank}``), one per value
    #: taken; None when the sources compute them
    metavars: tuple[str, ...] | None = ()
    #: how llama.cpp reads a number: ``stoi``, ``stoul``, ``stof``... (None: not a number)
    parse: str | None = None
    #: the only values accepted (code that throws for any other), None when the set is open or unknown
    choices: tuple[str, ...] | None = None
    #: words a number option also takes (``-ngl auto``)
    keywords: tuple[str, ...] = ()
    #: numeric values llama.cpp refuses: (op, bound) pairs read from ``if (value < 0) throw``;
    #: ``("nonfinite", None)`` for ``!std::isfinite``
    refuse_if: tuple[tuple[str, Any], ...] = ()
    #: the default, typed for the kind (False for a flag not given), None when not readable
    default: Any = None
    #: what the help says after ``default:``, verbatim (None when it says nothing)
    default_text: str | None = None
    #: the environment variable llama-server reads it from (negatable flags also read ``LLAMA_ARG_NO_...``)
    env: str | None = None
    #: declared for the server itself (not only inherited from the options common to every tool)
    server_specific: bool = False
    sampling: bool = False
    speculative: bool = False
    #: repeating it adds values (``--lora a --lora b``) instead of replacing the earlier one
    repeatable: bool = False
    #: how one value is split into several: ``csv`` (comma-separated, double quotes group), ``,`` or None
    split: str | None = None
    #: it prints something and exits (``--version``, ``-h``, ``--list-devices``)
    exits: bool = False
    #: the option was removed: llama.cpp refuses it with this message
    removed: str | None = None
    #: the handler opens the value as a file while the arguments are parsed (it must exist then)
    reads_file: bool = False
    #: the line of the declaration in ``common/arg.cpp``
    line: int = 0

    @property
    def takes_value(self) -> bool:
        return self.nargs > 0

    @property
    def all_spellings(self) -> tuple[str, ...]:
        return self.spellings + self.negations
