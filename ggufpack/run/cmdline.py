"""An image's CMD (llama-server arguments) → the argument list of the server that runs it.

Steps, in order (:func:`server_options`): split CMD into options; fold the packaged system prompt
into the chat template (:mod:`ggufpack.run.chat`); rebase every path the image holds (model,
drafter, projector, adapters and every ``*-file`` input) onto a path the server can open; append
the user's extra arguments. The result is still llama-server's language: :func:`llama_server_args`
flattens it, :func:`llama_cpp_python_args` translates it for llama-cpp-python's server and refuses
what that server cannot honour. Arguments stay a list from CMD to ``exec``: nothing is quoted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..errors import GGUFPackError, UsageError
from ..packerfile.instructions import CMD_FILE_OPTIONS
from .chat import is_jinja, prompt_text, with_system_prompt
from .image import RunnableImage

_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_SYSTEM_PROMPT_FILE = ("-sysf", "--system-prompt-file")
_SYSTEM_PROMPT = ("-sys", "--system-prompt")
_TEMPLATE = "--chat-template"
_TEMPLATE_FILE = "--chat-template-file"
_MODEL = ("-m", "--model")
#: options naming a file the server writes or fetches, never one of the image's files
_NOT_IMAGE_FILES = frozenset({"--log-file", "-o", "--output", "--output-file", "-hff", "--hf-file"})
#: short spellings of llama.cpp's ``*-file`` inputs
_SHORT_FILE_OPTIONS = frozenset({"-sysf", "-jf", "-bf"})
#: options that always take one value, even one that starts with ``-``
_ONE_VALUE = frozenset({_TEMPLATE, *_SYSTEM_PROMPT, "-a", "--alias", "--api-key"})
#: set by ``ggufpack run`` itself (``--host``/``-p``), never by CMD or the extra arguments
_LISTEN = frozenset({"--host", "--port"})


@dataclass(frozen=True)
class Option:
    """One llama-server option with its values (``("-c", ("512",))``, ``("--jinja", ())``)."""

    name: str
    values: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        return [self.name, *self.values]


def is_file_option(name: str) -> bool:
    """Does llama-server read the value of ``name`` from a file (a path the image may hold)?"""
    if name in _NOT_IMAGE_FILES:
        return False
    return name in CMD_FILE_OPTIONS or name.endswith("-file") or name in _SHORT_FILE_OPTIONS


def _is_option(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not _NUMBER.fullmatch(token)


def _value_count(name: str) -> int | None:
    """How many values ``name`` takes when that is fixed (None: the words up to the next option)."""
    if name in CMD_FILE_OPTIONS:
        return CMD_FILE_OPTIONS[name][1]
    return 1 if name in _ONE_VALUE or is_file_option(name) else None


def parse_options(args: Sequence[str]) -> list[Option]:
    """llama-server arguments as options; an option takes the words up to the next option (llama-server
    has no positional arguments), or its fixed count when it is known to take values."""
    out: list[Option] = []
    i = 0
    while i < len(args):
        name = args[i]
        if not _is_option(name):
            raise UsageError(f"server argument {name!r} is not an option (they start with '-')")
        fixed = _value_count(name)
        j = i + 1
        if fixed is not None:
            j = i + 1 + fixed
            if j > len(args):
                raise UsageError(f"server argument {name} needs {fixed} value(s)")
        else:
            while j < len(args) and not _is_option(args[j]):
                j += 1
        out.append(Option(name, tuple(args[i + 1:j])))
        i = j
    return out


def _last(options: Iterable[Option], names: Iterable[str]) -> Option | None:
    wanted = set(names)
    found = [o for o in options if o.name in wanted]
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
        model = _last(options, _MODEL)
        template = image.model_template(model.values[0]) if model else None
        if template is None:
            raise GGUFPackError(
                f"{image.name}: CMD has a system prompt but no chat template to put it in, and the model "
                f"has none either; add --chat-template-file to CMD"
            )
    elif template_option.name == _TEMPLATE:
        template = template_option.values[0]
    else:
        template = prompt_text(image.read_bytes(template_option.values[0]), template_option.values[0])
    dropped = {*_SYSTEM_PROMPT_FILE, *_SYSTEM_PROMPT, _TEMPLATE, _TEMPLATE_FILE}
    kept = [o for o in options if o.name not in dropped]
    jinja = [] if any(o.name == "--jinja" for o in kept) else [Option("--jinja")]
    return [*kept, Option(_TEMPLATE, (with_system_prompt(template, prompt),)), *jinja]


def rebase(options: list[Option], to_path: Callable[[str], str]) -> list[Option]:
    """Every image path (model files and ``*-file`` inputs) mapped by ``to_path``."""
    out = []
    for option in options:
        if is_file_option(option.name) and option.values:
            option = Option(option.name, (to_path(option.values[0]), *option.values[1:]))
        out.append(option)
    return out


def server_options(image: RunnableImage, to_path: Callable[[str], str], extra: Sequence[str]) -> list[Option]:
    """The image's CMD with its system prompt folded in and its paths rebased, then ``extra``
    (the user's own llama-server arguments, whose paths are the user's: not rebased)."""
    options = parse_options(image.cmd)
    if _last(options, _MODEL) is None:
        raise GGUFPackError(f"{image.name}: CMD names no model (-m)")
    options = rebase(fold_system_prompt(options, image), to_path)
    added = parse_options(extra)
    for option in added:
        if option.name in _LISTEN:
            raise UsageError(f"give {option.name} to ggufpack run (--host, -p/--port), not after --")
    return [o for o in options if o.name not in _LISTEN] + added


def llama_server_args(options: Iterable[Option]) -> list[str]:
    return [arg for option in options for arg in option.argv()]


# --------------------------------------------------------------------- llama-cpp-python's server

#: llama-server option → llama-cpp-python server setting taking the same value
_SAME_VALUE = {
    **dict.fromkeys(_MODEL, "model"),
    **dict.fromkeys(("-c", "--ctx-size"), "n_ctx"),
    **dict.fromkeys(("-b", "--batch-size"), "n_batch"),
    **dict.fromkeys(("-ub", "--ubatch-size"), "n_ubatch"),
    **dict.fromkeys(("-t", "--threads"), "n_threads"),
    **dict.fromkeys(("-tb", "--threads-batch"), "n_threads_batch"),
    **dict.fromkeys(("-s", "--seed"), "seed"),
    **dict.fromkeys(("-mg", "--main-gpu"), "main_gpu"),
    **dict.fromkeys(("-a", "--alias"), "model_alias"),
    **dict.fromkeys(("-mm", "--mmproj"), "clip_model_path"),
    "--rope-freq-base": "rope_freq_base",
    "--rope-freq-scale": "rope_freq_scale",
    "--yarn-orig-ctx": "yarn_orig_ctx",
    "--yarn-ext-factor": "yarn_ext_factor",
    "--yarn-attn-factor": "yarn_attn_factor",
    "--yarn-beta-slow": "yarn_beta_slow",
    "--yarn-beta-fast": "yarn_beta_fast",
    "--rpc": "rpc_servers",
    "--api-key": "api_key",
    "--ssl-key-file": "ssl_keyfile",
    "--ssl-cert-file": "ssl_certfile",
}
#: llama-server flag → (setting, value)
_FLAGS = {
    **dict.fromkeys(("--embedding", "--embeddings"), ("embedding", "true")),
    "--mmap": ("use_mmap", "true"),
    "--no-mmap": ("use_mmap", "false"),
    "--mlock": ("use_mlock", "true"),
    **dict.fromkeys(("-kvo", "--kv-offload"), ("offload_kqv", "true")),
    **dict.fromkeys(("-nkvo", "--no-kv-offload"), ("offload_kqv", "false")),
}
#: options that change nothing there: it always renders Jinja templates and has no web UI or warmup
_NO_EFFECT = frozenset({"--jinja", "--no-webui", "--warmup", "--no-warmup"})
_INTEGER = frozenset({"n_ctx", "n_batch", "n_ubatch", "n_threads", "n_threads_batch", "seed", "main_gpu",
                      "yarn_orig_ctx"})
_SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
_ROPE_SCALING = {"none": 0, "linear": 1, "yarn": 2, "longrope": 3}
_FLASH_ATTN = {"on": "true", "1": "true", "true": "true", "off": "false", "0": "false", "false": "false"}
#: llama.cpp built-in template names that llama-cpp-python knows under another (or the same) name
_TEMPLATE_NAMES = {"chatml": "chatml", "llama2": "llama-2", "llama3": "llama-3", "gemma": "gemma",
                   "vicuna": "vicuna", "zephyr": "zephyr", "openchat": "openchat", "chatglm3": "chatglm3"}
#: why llama-cpp-python's server cannot honour these
_REFUSED = {
    **dict.fromkeys(("-md", "--model-draft"), "it has no draft-model speculative decoding"),
    **dict.fromkeys(("--control-vector", "--control-vector-scaled"), "it cannot apply control vectors"),
    **dict.fromkeys(("-n", "--n-predict"), "it has no server-wide token limit (send max_tokens per request)"),
    **dict.fromkeys(("--pooling",), "it has no pooling option (the model's own pooling applies)"),
    **dict.fromkeys(("--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty"),
                    "it has no server-wide sampling defaults (send them per request)"),
}


def _llama_cpp_python_error(option: Option, why: str) -> GGUFPackError:
    return GGUFPackError(
        f"{' '.join(option.argv())[:80]}: llama-cpp-python's server cannot honour this llama-server option "
        f"({why}); run with --runtime llama-server, or leave it out"
    )


def _choice(option: Option, table: dict[str, object]) -> object:
    value = option.values[0].lower() if option.values else ""
    if value not in table:
        raise _llama_cpp_python_error(option, f"expected one of {', '.join(table)}")
    return table[value]


def _ggml_type(option: Option) -> str:
    import gguf

    name = option.values[0].upper() if option.values else ""
    try:
        return str(int(gguf.GGMLQuantizationType[name]))
    except KeyError:
        raise _llama_cpp_python_error(option, "an unknown cache type") from None


def _number(option: Option, index: int = 0) -> float:
    """Value ``index`` of ``option`` as a number; NaN when it is missing or not a number."""
    try:
        return float(option.values[index])
    except (IndexError, ValueError):
        return math.nan


def _gpu_layers(option: Option) -> str:
    value = option.values[0] if option.values else ""
    if value == "all":
        return "-1"
    if not re.fullmatch(r"-?\d+", value):
        raise _llama_cpp_python_error(option, "it takes a layer count or 'all', it cannot fit layers to memory")
    return value


class _Translation:
    """llama-cpp-python settings being gathered from llama-server options (the last one wins)."""

    def __init__(self) -> None:
        self.settings: dict[str, list[str]] = {}
        self.kv_overrides: list[str] = []
        self.loras: list[str] = []
        self.notes: list[str] = []

    def set(self, name: str, *values: str) -> None:
        self.settings.pop(name, None)
        self.settings[name] = list(values)

    def add(self, option: Option) -> None:
        name, values = option.name, option.values
        if name in _NO_EFFECT:
            return
        if name in _REFUSED:
            raise _llama_cpp_python_error(option, _REFUSED[name])
        if name in _SAME_VALUE:
            setting = _SAME_VALUE[name]
            if len(values) != 1 or (setting in _INTEGER and not re.fullmatch(r"-?\d+", values[0])):
                raise UsageError(f"server argument {name} takes one {'integer ' if setting in _INTEGER else ''}value")
            self.set(setting, values[0])
        elif name in _FLAGS:
            self.set(*_FLAGS[name])
        elif name in ("-ngl", "--gpu-layers", "--n-gpu-layers"):
            self.set("n_gpu_layers", _gpu_layers(option))
        elif name in ("-sm", "--split-mode"):
            self.set("split_mode", str(_choice(option, _SPLIT_MODES)))
        elif name in ("-ts", "--tensor-split"):
            if len(values) != 1:
                raise UsageError(f"server argument {name} takes one value (proportions such as 3,1)")
            self.set("tensor_split", *values[0].replace("/", ",").split(","))
        elif name in ("-fa", "--flash-attn"):
            if values and values[0].lower() == "auto":
                self.settings.pop("flash_attn", None)
            else:
                self.set("flash_attn", str(_choice(option, _FLASH_ATTN)) if values else "true")
        elif name in ("-ctk", "--cache-type-k"):
            self.set("type_k", _ggml_type(option))
        elif name in ("-ctv", "--cache-type-v"):
            self.set("type_v", _ggml_type(option))
        elif name == "--rope-scaling":
            self.set("rope_scaling_type", str(_choice(option, _ROPE_SCALING)))
        elif name == "--rope-scale":
            scale = _number(option)
            if not (math.isfinite(scale) and scale > 0):
                raise UsageError(f"server argument {name} takes one number above 0")
            self.set("rope_freq_scale", repr(1.0 / scale))
        elif name == "--override-kv":
            self.kv_overrides.extend(values)
        elif name == "--numa":
            self.set("numa", "true")
        elif name in ("--lora", "--lora-scaled"):
            if name == "--lora-scaled" and _number(option, 1) != 1.0:
                raise _llama_cpp_python_error(option, "it applies an adapter at scale 1 only")
            self.loras.append(values[0])
        elif name == _TEMPLATE:
            self._template(option)
        elif name == _TEMPLATE_FILE:
            self._drop_templates()
            self.set("chat_template_file", values[0])
        elif name in ("-np", "--parallel"):
            self.notes.append(f"{name} {' '.join(values)}: llama-cpp-python's server answers one request at a time")
        else:
            raise _llama_cpp_python_error(option, "it has no such option")

    def _drop_templates(self) -> None:
        for name in ("chat_template", "chat_template_file", "chat_format"):
            self.settings.pop(name, None)

    def _template(self, option: Option) -> None:
        template = option.values[0]
        self._drop_templates()
        if is_jinja(template):
            self.set("chat_template", template)
        elif template in _TEMPLATE_NAMES:
            self.set("chat_format", _TEMPLATE_NAMES[template])
        else:
            raise _llama_cpp_python_error(option, f"it does not know the built-in template {template!r}")

    def argv(self) -> list[str]:
        if len(self.loras) > 1:
            raise GGUFPackError("llama-cpp-python's server applies one LoRA adapter at most; CMD has "
                                f"{len(self.loras)}: run with --runtime llama-server")
        settings = dict(self.settings)
        if self.loras:
            settings["lora_path"] = self.loras
        if self.kv_overrides:
            settings["kv_overrides"] = self.kv_overrides
        if "clip_model_path" in settings:
            if {"chat_template", "chat_template_file", "chat_format"} & settings.keys():
                raise GGUFPackError("llama-cpp-python's server cannot combine a projector (--mmproj) with a chat "
                                    "template or system prompt of the image; run with --runtime llama-server")
            settings["chat_format"] = ["mtmd"]
        return [arg for name, values in settings.items() for arg in (f"--{name}", *values)]


def llama_cpp_python_args(options: Iterable[Option]) -> tuple[list[str], list[str]]:
    """The arguments of :mod:`ggufpack.run.lcpp_server` for llama-server ``options``, and notes on
    options accepted with a difference (``-np``)."""
    translation = _Translation()
    for option in options:
        translation.add(option)
    return translation.argv(), translation.notes
