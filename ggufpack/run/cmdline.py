"""An image's CMD (llama-server arguments) → the argument list of the server that runs it.

Steps, in order (:func:`server_options`): read CMD as llama-server reads it
(:mod:`ggufpack.options.server_args`, from the vendored llama.cpp's own option table); fold the
packaged system prompt into the chat template (:mod:`ggufpack.run.chat`); rebase every path the image
holds (model, drafter, projector, adapters and every other input file) onto a path the server can
open; name the model after the image (``--alias``) unless CMD does; append the user's extra
arguments. The result is still llama-server's language: :func:`llama_server_args` flattens it,
:func:`llama_cpp_python_args` translates it for llama-cpp-python's server
(:mod:`ggufpack.options.default_runtime`), which refuses what that server cannot honour. Arguments
stay a list from CMD to ``exec``: nothing is quoted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..errors import GGUFPackError, UsageError
from ..options.default_runtime import SYSTEM_PROMPT_OPTIONS, lora_paths, translate
from ..options.server_args import find_option, parse_server_args, split_csv
from .chat import prompt_text, with_system_prompt
from .image import RunnableImage

_SYSTEM_PROMPT_FILE = ("-sysf", "--system-prompt-file")
_SYSTEM_PROMPT = ("-sys", "--system-prompt")
_TEMPLATE = "--chat-template"
_TEMPLATE_FILE = "--chat-template-file"
_MODEL = "--model"
_ALIAS = "--alias"
#: path options naming what the server writes, a directory or a remote file: never one of the image's files
_NOT_IMAGE_FILES = frozenset({"--log-file", "--log-prompts-dir", "--slot-save-path", "--models-dir", "--path",
                              "--media-path", "--video-ffmpeg-dir", "--hf-file", "--lookup-cache-dynamic"})
#: options whose value lists image files with a scale each (``a.gguf:0.5,b.gguf:1``)
_SCALED_FILES = frozenset({"--lora-scaled", "--control-vector-scaled"})
#: set by ``ggufpack run`` itself (``--host``/``-p``), never by CMD or the extra arguments
_LISTEN = frozenset({"--host", "--port"})


@dataclass(frozen=True)
class Option:
    """One llama-server option with its values (``("-c", ("512",))``, ``("--jinja", ())``)."""

    name: str
    values: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        return [self.name, *self.values]

    @property
    def canonical(self) -> str:
        """The option's llama-server name whatever the spelling (``-c`` → ``--ctx-size``)."""
        option = find_option(self.name)
        return option.name if option is not None else self.name


def is_file_option(name: str) -> bool:
    """Does llama-server read the value of option ``name`` from a file (a path the image may hold)?"""
    if name in _SYSTEM_PROMPT_FILE:
        return True
    option = find_option(name)
    if option is None:
        return False
    return option.name in _SCALED_FILES or (option.kind == "path" and option.name not in _NOT_IMAGE_FILES)


def parse_options(args: Sequence[str]) -> list[Option]:
    """llama-server arguments as options, read as llama-server reads them (an unknown option, a missing
    or bad value is a :class:`~ggufpack.errors.UsageError`); ggufpack's own system-prompt options
    (one value each) are kept for :func:`fold_system_prompt`."""
    out: list[Option] = []
    start = 0
    for i in [*(i for i, arg in enumerate(args) if arg in SYSTEM_PROMPT_OPTIONS), len(args)]:
        if i < start:  # the value of a system-prompt option that looks like one
            continue
        out += [Option(item.spelling, item.raw) for item in parse_server_args(args[start:i]).items]
        if i < len(args):
            if i + 1 >= len(args):
                raise UsageError(f"server argument {args[i]} needs a value after it")
            out.append(Option(args[i], (args[i + 1],)))
        start = i + 2
    return out


def _last(options: Iterable[Option], names: Iterable[str]) -> Option | None:
    wanted = set(names)
    found = [o for o in options if o.name in wanted or o.canonical in wanted]
    return found[-1] if found else None


def fold_system_prompt(options: list[Option], image: RunnableImage) -> list[Option]:
    """Replace ``--system-prompt-file`` (or ``--system-prompt``) by a chat template that carries it.

    The template is CMD's own (``--chat-template`` text or ``--chat-template-file``), else the one
    in the model's GGUF metadata.
    """
    prompt_option = _last(options, (*_SYSTEM_PROMPT_FILE, *_SYSTEM_PROMPT))
    if prompt_option is None:
        return options
    value = prompt_option.values[0]
    prompt = prompt_text(image.read_bytes(value), value) if prompt_option.name in _SYSTEM_PROMPT_FILE else value
    template_option = _last(options, (_TEMPLATE, _TEMPLATE_FILE))
    if template_option is None:
        model = _last(options, (_MODEL,))
        template = image.model_template(model.values[0]) if model else None
        if template is None:
            raise GGUFPackError(
                f"{image.name}: CMD has a system prompt but no chat template to put it in, and the model "
                f"has none either; add --chat-template-file to CMD"
            )
    elif template_option.canonical == _TEMPLATE:
        template = template_option.values[0]
    else:
        template = prompt_text(image.read_bytes(template_option.values[0]), template_option.values[0])
    dropped = {*_SYSTEM_PROMPT_FILE, *_SYSTEM_PROMPT, _TEMPLATE, _TEMPLATE_FILE}
    kept = [o for o in options if o.name not in dropped and o.canonical not in dropped]
    jinja = [] if any(o.canonical == "--jinja" for o in kept) else [Option("--jinja")]
    return [*kept, Option(_TEMPLATE, (with_system_prompt(template, prompt),)), *jinja]


def _rebased_value(option: Option, value: str, to_path: Callable[[str], str]) -> str:
    spec = find_option(option.name)
    if spec is not None and spec.name in _SCALED_FILES:
        return ",".join(f"{to_path(path)}{scale}" for path, scale in lora_paths(value, scaled=True))
    if spec is not None and spec.split == "csv":
        return ",".join(to_path(path) for path in split_csv(value))
    return to_path(value)


def rebase(options: list[Option], to_path: Callable[[str], str]) -> list[Option]:
    """Every image path (model files and other input files) mapped by ``to_path``."""
    out = []
    for option in options:
        if is_file_option(option.name) and option.values:
            option = Option(option.name, (_rebased_value(option, option.values[0], to_path), *option.values[1:]))
        out.append(option)
    return out


def server_options(image: RunnableImage, to_path: Callable[[str], str], extra: Sequence[str]) -> list[Option]:
    """The image's CMD with its system prompt folded in and its paths rebased, then ``extra``
    (the user's own llama-server arguments, whose paths are the user's: not rebased)."""
    options = parse_options(image.cmd)
    if _last(options, (_MODEL,)) is None:
        raise GGUFPackError(f"{image.name}: CMD names no model (-m)")
    options = rebase(fold_system_prompt(options, image), to_path)
    added = parse_options(extra)
    for option in added:
        if option.canonical in _LISTEN:
            raise UsageError(f"give {option.name} to ggufpack run (--host, -p/--port), not after --")
    if _last([*options, *added], (_ALIAS,)) is None:
        added.append(Option(_ALIAS, (image.name,)))  # /v1/models names the model after the image
    return [o for o in options if o.canonical not in _LISTEN] + added


def llama_server_args(options: Iterable[Option]) -> list[str]:
    return [arg for option in options for arg in option.argv()]


# --------------------------------------------------------------------- llama-cpp-python's server


def llama_cpp_python_args(options: Iterable[Option]) -> tuple[list[str], list[str]]:
    """The arguments of :mod:`ggufpack.run.lcpp_server` serving llama-server ``options`` as llama-server
    would, and notes on what still differs; raises
    :class:`~ggufpack.options.default_runtime.CannotHonour` for what it cannot do."""
    return translate(llama_server_args(options))
