"""What ggufpack's default runtime, llama-cpp-python's server, makes of each llama-server option.

Pure data and text (no ``llama_cpp``, no ``numpy``), so that ``plan`` and ``build`` can say which
options of a CMD the default runtime cannot honour (:func:`cannot_honour`), ``run`` can translate a
CMD for it (:func:`translate`, the arguments of :mod:`ggufpack.run.lcpp_server`) and ``estimate`` can
know the settings it runs with (:data:`SLOTS`, :func:`batch_sizes`).

The aim is that an image serves the same under both runtimes. llama-cpp-python's server starts from
its own defaults (2048 tokens of context, batch 512, no flash attention, a full-size sliding-window
cache, unnormalised embeddings, 16 tokens per completion...); the translation always states
llama-server's instead, read from :mod:`.llama_server` (generated from the vendored llama.cpp):

- context 0 = the model's training context, batch 2048, micro-batch 512 (both the micro-batch for
  embeddings, as llama-server sets them), every layer offloaded, flash attention ``auto``, the
  sliding-window cache sized to the window (``swa_full`` off), the GGUF's own pooling;
- sampling options (``--temp``, ``--top-p``, ``-n``, ``-r``...) become per-request defaults, which a
  request's own fields override, as in llama-server;
- embeddings normalised as ``--embd-normalize`` says (default 2, Euclidean);
- LoRA adapters at any scale, several of them, with the model still memory-mapped;
- the model's id in ``/v1/models`` is the image reference unless CMD sets ``--alias``.

What it truly cannot do is refused with the reason (:class:`Refusal`): several slots (``-np`` > 1
for a generating model: it answers one request at a time), draft-model speculative decoding,
control vectors, reranking, and the many llama-server options it has no counterpart for. ``run``
then picks llama-server when a backend is installed.

One slot for a generating model, so that ``estimate`` sizes that runtime with :data:`SLOTS` and an
output limit of one token per step; an embedding model gets llama-server's slots (``-np`` or 4),
each sequence of a batch of inputs being one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import GGUFPackError
from .server_args import (
    ArgProblem,
    ParsedArg,
    ServerArgs,
    ServerArgsError,
    check_server_args,
    find_option,
    parse_server_args,
    split_csv,
)

#: ggufpack's own CMD options, not llama-server's: the image's system prompt, which ``run`` folds into
#: the chat template (:mod:`ggufpack.run.chat`) before a server sees the arguments; each takes one value
SYSTEM_PROMPT_OPTIONS = {"-sysf": "file", "--system-prompt-file": "file", "-sys": "text", "--system-prompt": "text"}

#: slots of a generating model under this runtime (llama-server's auto is 4)
SLOTS = 1
#: llama-server's slots when ``-np`` is not given (``tools/server/server.cpp``: auto = 4, unified KV)
AUTO_SLOTS = 4

#: llama-server's cache type names → ggml type ids (``type_k``/``type_v`` of llama-cpp-python)
CACHE_TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}

#: llama.cpp built-in template names that llama-cpp-python knows under another (or the same) name
TEMPLATE_NAMES = {"chatml": "chatml", "llama2": "llama-2", "llama3": "llama-3", "gemma": "gemma",
                  "vicuna": "vicuna", "zephyr": "zephyr", "openchat": "openchat", "chatglm3": "chatglm3"}


def _default(name: str) -> Any:
    option = find_option(name)
    assert option is not None and option.default is not None, f"llama-server's {name} has no readable default"
    return option.default


# --------------------------------------------------------------------------------------------- tables

#: llama-server option → llama-cpp-python server setting taking the same value
_SAME_VALUE = {
    "--model": "model", "--ctx-size": "n_ctx", "--batch-size": "n_batch", "--ubatch-size": "n_ubatch",
    "--threads": "n_threads", "--threads-batch": "n_threads_batch", "--main-gpu": "main_gpu",
    "--mmproj": "clip_model_path", "--rope-freq-base": "rope_freq_base", "--rope-freq-scale": "rope_freq_scale",
    "--yarn-orig-ctx": "yarn_orig_ctx", "--yarn-ext-factor": "yarn_ext_factor",
    "--yarn-attn-factor": "yarn_attn_factor", "--yarn-beta-slow": "yarn_beta_slow",
    "--yarn-beta-fast": "yarn_beta_fast", "--rpc": "rpc_servers", "--ssl-key-file": "ssl_keyfile",
    "--ssl-cert-file": "ssl_certfile", "--repeat-last-n": "last_n_tokens_size",
    "--chat-template-file": "chat_template_file",
}
#: llama-server option → the request field it gives a default to (llama-cpp-python's request names)
REQUEST_FIELDS = {
    "--temp": "temperature", "--top-p": "top_p", "--top-k": "top_k", "--min-p": "min_p",
    "--repeat-penalty": "repeat_penalty", "--presence-penalty": "presence_penalty",
    "--frequency-penalty": "frequency_penalty", "--predict": "max_tokens", "--mirostat": "mirostat_mode",
    "--mirostat-lr": "mirostat_eta", "--mirostat-ent": "mirostat_tau", "--seed": "seed",
}
#: what llama-cpp-python's request models accept (``llama_cpp/server/types.py``): (lowest, highest)
_REQUEST_RANGES = {"top_p": (0.0, 1.0), "min_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
                   "frequency_penalty": (-2.0, 2.0), "repeat_penalty": (0.0, None), "mirostat_mode": (0, 2),
                   "mirostat_tau": (0.0, 10.0), "mirostat_eta": (0.001, 1.0)}
#: options that change nothing there (it renders Jinja templates, has no web UI, no warmup, one
#: unified cache, logs everything)
_NO_EFFECT = frozenset({"--jinja", "--ui", "--warmup", "--kv-unified", "--verbosity", "--log-colors",
                        "--log-prefix", "--log-timestamps"})
#: why llama-cpp-python's server cannot honour these (any other option: it has no such option)
_REFUSED = {
    "--spec-draft-model": "it has no draft-model speculative decoding",
    "--control-vector": "it cannot apply control vectors",
    "--control-vector-scaled": "it cannot apply control vectors",
    "--control-vector-layer-range": "it cannot apply control vectors",
    "--reranking": "it has no reranking endpoint",
}
#: LLAMA_DEFAULT_SEED: a new random seed each time
_RANDOM_SEED = 0xFFFFFFFF
_GPU_LAYER_WORDS = frozenset({"auto", "all"})
_SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
_ROPE_SCALING = {"none": 0, "linear": 1, "yarn": 2}
_NUMA = {"distribute": 1, "isolate": 2, "numactl": 3}
_FLASH_ATTN = {"on": "on", "enabled": "on", "true": "on", "1": "on", "off": "off", "disabled": "off", "false": "off",
               "0": "off", "auto": "auto", "-1": "auto"}
#: ``--load-mode`` → (use_mmap, use_mlock); auto is mmap
_LOAD_MODES = {"auto": (True, False), "mmap": (True, False), "none": (False, False), "mlock": (False, True),
               "mmap+mlock": (True, True)}


def base_request_defaults() -> dict[str, Any]:
    """llama-server's sampling defaults (``common_params_sampling``) as request fields; llama-cpp-python's
    own differ (``repeat_penalty`` 1.1, ``max_tokens`` 16 for completions)."""
    out = {field_name: _default(option) for option, field_name in REQUEST_FIELDS.items() if option != "--seed"}
    out["max_tokens"] = _n_predict(out["max_tokens"])
    return out


def _n_predict(value: int) -> int | None:
    return None if value < 0 else value  # -1 infinity, -2 until the context is full: no limit either way


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Refusal:
    """An option the default runtime cannot honour: where it is in the argv and why."""

    index: int
    option: str
    reason: str

    def __str__(self) -> str:
        return f"{self.option} ({self.reason})"


class CannotHonour(GGUFPackError):
    """The CMD (or the extra arguments) needs what llama-cpp-python's server cannot do."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        self.refusals = tuple(refusals)
        listed = "; ".join(str(r) for r in self.refusals)
        super().__init__(f"llama-cpp-python's server cannot honour {listed}; run with --runtime llama-server "
                         f"(ggufpack backends install llama.cpp builds one), or leave "
                         f"{'it' if len(self.refusals) == 1 else 'them'} out")


@dataclass
class Translation:
    """llama-cpp-python server settings (its flag names, without ``--``), gathered from llama-server
    options; the last one wins, as in llama-server."""

    settings: dict[str, list[str]] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)
    kv_overrides: list[str] = field(default_factory=list)
    loras: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    slots: int | None = None
    slots_item: ParsedArg | None = None

    def set(self, name: str, *values: object) -> None:
        self.settings.pop(name, None)
        self.settings[name] = [str(v) for v in values]

    def refuse(self, item: ParsedArg, reason: str) -> None:
        written = " ".join((item.spelling, *item.raw))
        self.refusals.append(Refusal(item.index, written if len(written) <= 60 else written[:57] + "...", reason))

    def value(self, name: str) -> str | None:
        values = self.settings.get(name)
        return values[0] if values else None


_Handler = Callable[[Translation, ParsedArg], None]


def _same_value(t: Translation, item: ParsedArg) -> None:
    setting = _SAME_VALUE[item.option.name]
    if setting in ("n_threads", "n_threads_batch") and isinstance(item.value, int) and item.value < 0:
        t.settings.pop(setting, None)  # llama-server's -1: its own choice of threads; llama-cpp-python's too
        return
    if setting == "chat_template_file":
        _drop_templates(t)
    t.set(setting, item.value)


def _request(t: Translation, item: ParsedArg) -> None:
    name = REQUEST_FIELDS[item.option.name]
    value = item.value
    if name == "seed":
        value = int(value) % (1 << 32)  # std::stoul, kept in a uint32_t
        if value == _RANDOM_SEED:
            t.request.pop("seed", None)
            t.settings.pop("seed", None)
            return
        t.set("seed", value)
    elif name == "max_tokens":
        value = _n_predict(value)
    elif name == "temperature":
        value = max(value, 0.0)  # llama-server clamps a negative temperature to 0 (greedy)
    elif name == "top_k":
        value = max(value, 0)  # <= 0: the whole vocabulary, which is llama-cpp-python's 0
    low, high = _REQUEST_RANGES.get(name, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        t.refuse(item, f"its requests accept {name} from {low} to {high}" if high is not None
                 else f"its requests accept {name} from {low}")
        return
    t.request[name] = value


def _flag(setting: str) -> _Handler:
    def handle(t: Translation, item: ParsedArg) -> None:
        t.set(setting, "true" if item.value else "false")
    return handle


def _choice(setting: str, table: dict[str, Any]) -> _Handler:
    def handle(t: Translation, item: ParsedArg) -> None:
        if item.value not in table:
            t.refuse(item, f"it takes {', '.join(k for k in table if k)} only")
        else:
            t.set(setting, table[item.value])
    return handle


def _gpu_layers(t: Translation, item: ParsedArg) -> None:
    value = item.value
    if value in _GPU_LAYER_WORDS or (isinstance(value, int) and value < 0):
        if value == "auto" or value == -1:
            t.notes.append(f"{item.spelling} {value}: llama-cpp-python offloads every layer, it does not fit "
                           "layers to free memory")
        t.set("n_gpu_layers", -1)
    else:
        t.set("n_gpu_layers", value)


def _tensor_split(t: Translation, item: ParsedArg) -> None:
    t.set("tensor_split", *str(item.value).replace("/", ",").split(","))


def _flash_attn(t: Translation, item: ParsedArg) -> None:
    t.set("flash_attn_type", _FLASH_ATTN[str(item.value).lower()])


def _cache_type(setting: str) -> _Handler:
    def handle(t: Translation, item: ParsedArg) -> None:
        t.set(setting, CACHE_TYPE_IDS[item.value])
    return handle


def _bad_value(item: ParsedArg, message: str) -> ServerArgsError:
    """A value llama-server itself would refuse (or turn into nonsense), located as server_args locates one."""
    index = item.value_index if item.value_index is not None else item.index
    return ServerArgsError(ArgProblem(index, item.raw[0] if item.raw else item.spelling, "bad-value", message,
                                      option=item.option))


def _rope_scale(t: Translation, item: ParsedArg) -> None:
    scale = float(item.value)
    if not 0 < scale < float("inf"):
        raise _bad_value(item, f"{item.spelling} takes one number above 0 (a factor of the context)")
    t.set("rope_freq_scale", repr(1.0 / scale))


def _load_mode(t: Translation, item: ParsedArg) -> None:
    if item.value not in _LOAD_MODES:
        t.refuse(item, "it has no direct I/O loading")
        return
    mmap, mlock = _LOAD_MODES[item.value]
    t.set("use_mmap", "true" if mmap else "false")
    t.set("use_mlock", "true" if mlock else "false")


def _lora(t: Translation, item: ParsedArg) -> None:
    paths = item.value if isinstance(item.value, list) else [item.value]
    t.loras.extend((path, 1.0) for path in paths if path)


def _lora_scaled(t: Translation, item: ParsedArg) -> None:
    for entry in item.value if isinstance(item.value, list) else [item.value]:
        path, sep, scale = str(entry).rpartition(":")
        try:
            if not sep or not path:
                raise ValueError(entry)
            t.loras.append((path, float(scale)))
        except ValueError:
            raise _bad_value(item, f"{item.spelling} takes FNAME:SCALE,... (not {entry!r})") from None


def _template(t: Translation, item: ParsedArg) -> None:
    template = str(item.value)
    _drop_templates(t)
    if "{%" in template or "{{" in template:
        t.set("chat_template", template)
    elif template in TEMPLATE_NAMES:
        t.set("chat_format", TEMPLATE_NAMES[template])
    else:
        t.refuse(item, f"it does not know the built-in template {template!r}")


def _drop_templates(t: Translation) -> None:
    for name in ("chat_template", "chat_template_file", "chat_format"):
        t.settings.pop(name, None)


def _parallel(t: Translation, item: ParsedArg) -> None:
    t.slots = None if item.value < 0 else item.value  # -1: auto
    t.slots_item = item


def _pooling(t: Translation, item: ParsedArg) -> None:
    if item.value == "rank":
        t.refuse(item, "it has no reranking endpoint")
    else:
        t.set("pooling_type", item.value)


def _list_into(attribute: str) -> _Handler:
    def handle(t: Translation, item: ParsedArg) -> None:
        values = item.value if isinstance(item.value, list) else [item.value]
        getattr(t, attribute).extend(str(v) for v in values)
    return handle


def _api_key(t: Translation, item: ParsedArg) -> None:
    keys = [k for k in (item.value if isinstance(item.value, list) else [item.value]) if k]
    if len(keys) != 1:
        t.refuse(item, "it takes one API key")
    else:
        t.set("api_key", keys[0])


_HANDLERS: dict[str, _Handler] = {
    **dict.fromkeys(_SAME_VALUE, _same_value),
    **dict.fromkeys(REQUEST_FIELDS, _request),
    "--embedding": _flag("embedding"),
    "--kv-offload": _flag("offload_kqv"),
    "--swa-full": _flag("swa_full"),
    "--gpu-layers": _gpu_layers,
    "--split-mode": _choice("split_mode", _SPLIT_MODES),
    "--tensor-split": _tensor_split,
    "--flash-attn": _flash_attn,
    "--cache-type-k": _cache_type("type_k"),
    "--cache-type-v": _cache_type("type_v"),
    "--rope-scaling": _choice("rope_scaling_type", _ROPE_SCALING),
    "--rope-scale": _rope_scale,
    "--load-mode": _load_mode,
    "--numa": _choice("numa", _NUMA),
    "--override-kv": _list_into("kv_overrides"),
    "--lora": _lora,
    "--lora-scaled": _lora_scaled,
    "--chat-template": _template,
    "--parallel": _parallel,
    "--pooling": _pooling,
    "--embd-normalize": lambda t, item: t.set("embd_normalize", item.value),
    "--reverse-prompt": _list_into("stop"),
    "--alias": _list_into("aliases"),
    "--api-key": _api_key,
}


def _gather(args: ServerArgs) -> Translation:
    t = Translation()
    for item in args.items:
        name = item.option.name
        if name in _NO_EFFECT:
            continue
        if name in _REFUSED:
            t.refuse(item, _REFUSED[name])
            continue
        handler = _HANDLERS.get(name)
        if handler is None:
            t.refuse(item, "it has no such option")
            continue
        handler(t, item)
    return t


def batch_sizes(n_batch: int, n_ubatch: int, embedding: bool) -> tuple[int, int]:
    """llama-server's batch rule: an embedding model processes a whole input in one micro-batch, so its
    batch is cut to the micro-batch (``tools/server/server.cpp``)."""
    return (min(n_batch, n_ubatch) if embedding else n_batch), n_ubatch


def _finish(t: Translation, alias: str | None) -> None:
    """llama-server's defaults for what CMD left unsaid, and the checks that need every option seen."""
    embedding = t.value("embedding") == "true"
    n_batch = int(t.value("n_batch") or _default("--batch-size"))
    n_ubatch = int(t.value("n_ubatch") or _default("--ubatch-size"))
    n_batch, n_ubatch = batch_sizes(n_batch, n_ubatch, embedding)
    defaults = {"n_ctx": _default("--ctx-size"), "n_gpu_layers": -1, "flash_attn_type": "auto", "swa_full": "false"}
    for name, value in defaults.items():
        if name not in t.settings:
            t.set(name, value)
    t.set("n_batch", n_batch)
    t.set("n_ubatch", n_ubatch)
    t.set("logits_all", "false")  # llama-server keeps the last token's logits only: n_ctx x n_vocab floats otherwise
    if embedding:
        t.set("n_seq_max", t.slots or AUTO_SLOTS)
        t.set("n_outputs_max", 0)  # every token of a batch
        if "embd_normalize" not in t.settings:
            t.set("embd_normalize", _default("--embd-normalize"))
    else:
        if t.slots is not None and t.slots > SLOTS and t.slots_item is not None:
            t.refuse(t.slots_item, "it answers one request at a time (one slot)")
        t.set("n_seq_max", SLOTS)
        t.set("n_outputs_max", SLOTS)  # the last token of each slot, as llama-server reserves
    name = t.aliases[0] if t.aliases else alias
    if name:
        t.set("model_alias", name)
    if len(t.aliases) > 1:
        t.notes.append(f"--alias {','.join(t.aliases)}: llama-cpp-python's server names the model {t.aliases[0]}")
    if "clip_model_path" in t.settings:
        if {"chat_template", "chat_template_file", "chat_format"} & t.settings.keys():
            t.refusals.append(Refusal(-1, "--mmproj with a chat template",
                                      "it cannot combine a projector with a chat template or system prompt"))
        t.set("chat_format", "mtmd")


def _request_defaults(t: Translation) -> dict[str, Any]:
    out = {**base_request_defaults(), **t.request}
    if t.stop:
        out["stop"] = list(t.stop)
    return out


def _without_system_prompt(argv: Sequence[str]) -> tuple[list[str], list[int], ArgProblem | None]:
    """``argv`` without ggufpack's system-prompt options and their values: the llama-server arguments,
    the index in ``argv`` of each, and the problem of a system-prompt option with no value after it."""
    out: list[str] = []
    where: list[int] = []
    i = 0
    while i < len(argv):
        if argv[i] in SYSTEM_PROMPT_OPTIONS:
            if i + 1 >= len(argv):
                return out, where, ArgProblem(i, argv[i], "missing-value",
                                              f"expected value for argument {argv[i]} (ggufpack's system prompt)")
            i += 2
            continue
        out.append(argv[i])
        where.append(i)
        i += 1
    return out, where, None


def _named_template_for_system_prompt(argv: Sequence[str]) -> ArgProblem | None:
    """A system prompt travels in the Jinja chat template (:mod:`ggufpack.run.chat`): the built-in template
    name of a last ``--chat-template chatml`` has no room for it, and ``run`` would refuse the image."""
    prompt = next((arg for arg in argv if arg in SYSTEM_PROMPT_OPTIONS), None)
    last: tuple[int, str] | None = None  # the last template option: its index and canonical name
    for i, arg in enumerate(argv[:-1]):
        option = find_option(arg) if arg not in SYSTEM_PROMPT_OPTIONS else None
        if option is not None and option.name in ("--chat-template", "--chat-template-file"):
            last = (i, option.name)
    if prompt is None or last is None or last[1] != "--chat-template":
        return None
    at = last[0] + 1
    name = argv[at]
    if "{{" in name or "{%" in name:
        return None
    return ArgProblem(at, name, "bad-value",
                      f"{argv[at - 1]} {name!r} names a built-in template, but the image's system prompt ({prompt}) "
                      "needs a Jinja template to travel in: give the template's Jinja text (--chat-template-file "
                      "FILE), or leave the system prompt out")


def cmd_problem(argv: Sequence[str]) -> ArgProblem | None:
    """The first thing llama-server would refuse in a CMD (ggufpack's system-prompt options allowed), its
    ``index`` into ``argv`` (for the Packerfile's FILE:LINE:COL); None when llama-server accepts it."""
    args, where, own = _without_system_prompt(argv)
    problem = check_server_args(args)
    if problem is None:
        try:  # values llama-server's own handlers throw for (``--lora-scaled a.gguf`` without ``:SCALE``)
            _gather(parse_server_args(args))
        except ServerArgsError as exc:
            problem = exc.problem
    if problem is None and own is None:
        named = _named_template_for_system_prompt(argv)
        if named is not None:
            return named
        exits = [w for w in parse_server_args(args).warnings if w.code == "exits"]
        if not exits:
            return None
        problem = replace(exits[0], severity="error",
                          message=f"{exits[0].arg} makes llama-server print something and exit: the image would "
                                  "never serve; leave it out of CMD")
    if problem is not None:
        problem = replace(problem, index=where[problem.index] if problem.index < len(where) else len(argv) - 1)
    return min((p for p in (problem, own) if p is not None), key=lambda p: p.index)


def cannot_honour(argv: Iterable[str]) -> list[Refusal]:
    """What of ``argv`` (a CMD, llama-server's arguments) llama-cpp-python's server cannot honour; empty
    when it serves the image as llama-server would. ggufpack's system-prompt options are allowed.

    Raises :class:`~ggufpack.options.server_args.ServerArgsError` where llama-server itself would refuse
    the arguments (check those first, with their FILE:LINE:COL)."""
    args, where, problem = _without_system_prompt(list(argv))
    if problem is not None:
        raise ServerArgsError(problem)
    t = _gather(parse_server_args(args))
    _finish(t, None)
    refusals = [replace(r, index=where[r.index]) if 0 <= r.index < len(where) else r for r in t.refusals]
    return sorted(refusals, key=lambda r: r.index)


def translate(argv: Iterable[str], alias: str | None = None) -> tuple[list[str], list[str]]:
    """The arguments of :mod:`ggufpack.run.lcpp_server` serving ``argv`` (llama-server's, system prompt
    already folded into the template) as llama-server would, and notes on differences that remain;
    ``alias`` names the model when CMD sets no ``--alias``. Raises :class:`CannotHonour`."""
    t = _gather(parse_server_args(list(argv)))
    _finish(t, alias)
    if t.refusals:
        raise CannotHonour(sorted(t.refusals, key=lambda r: r.index))
    settings = dict(t.settings)
    if t.kv_overrides:
        settings["kv_overrides"] = t.kv_overrides
    out = [arg for name, values in settings.items() for arg in (f"--{name}", *values)]
    for path, scale in t.loras:
        out += ["--lora_adapter", path, repr(scale)]
    defaults = {} if t.value("embedding") == "true" else _request_defaults(t)
    if t.value("model_alias"):
        defaults["model"] = t.value("model_alias")  # answers name the model as llama-server's do
    if defaults:
        out += ["--request_defaults", json.dumps(defaults, separators=(",", ":"))]
    return out, t.notes


def lora_paths(value: str, scaled: bool) -> list[tuple[str, str]]:
    """The adapter paths of one ``--lora`` (``a.gguf,b.gguf``) or ``--lora-scaled`` value
    (``a.gguf:0.5,b.gguf:1``), each with what follows it (``""`` or ``":0.5"``)."""
    out = []
    for entry in split_csv(value):
        path, sep, scale = entry.rpartition(":") if scaled else (entry, "", "")
        out.append((path if sep else entry, f"{sep}{scale}" if sep else ""))
    return out
