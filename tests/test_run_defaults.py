"""The default runtime (llama-cpp-python's server) serves what the CMD says, as llama-server would.

One image per class of CMD option, built from real converted models and served by ``ggufpack run``
with no runtime flag, spoken to over real HTTP; each test checks that the server answers and that the
option is in effect: sampling options as request defaults (``-n`` caps the tokens, a request's own
fields win), the context size (llama.cpp's own log line: the training context without ``-c``), the
chat template with the packaged system prompt, pooling and normalisation of embeddings against
transformers' own pooled vectors, a LoRA adapter against llama-cpp-python applying it in process,
the image reference as the model id and ``/health``. What the default runtime cannot do (``-np 2``)
goes to llama-server when a backend is installed, and is refused clearly when none is.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from .helpers.builds import do_build, open_store, run_cli, write_context
from .helpers.serving import served
from .helpers.tiny_gpt2_bert import cosine, hf_pooled_embedding, make_tiny_bert
from .helpers.tiny_run import build_image, chat_packerfile, tiny_chat_gguf

pytest.importorskip("uvicorn", reason="llama-cpp-python's server extra is not installed")

PROMPT = "the tiny model says"


def _cmd(*args: str) -> str:
    return json.dumps(["-m", "/models/tiny.gguf", *args, "-t", "1"])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run-defaults")
    store = open_store(root / "home")
    chat = tiny_chat_gguf(root)
    model = "FROM scratch\nCOPY tiny.gguf /models/tiny.gguf\nCMD {}\n"
    build_image(store, root, chat, model.format(_cmd("--temp", "0.2", "-n", "5", "-s", "7")), "sampling:1")
    build_image(store, root, chat, chat_packerfile(', "-t", "1"'), "chat:1")
    build_image(store, root, chat, model.format(_cmd("-np", "2")), "slots:1")
    from ggufpack.convert import convert

    bert_dir = make_tiny_bert(root / "hf-bert")  # sentence-transformers layout: mean pooling, then Normalize
    bert = root / "bert.gguf"
    convert(bert_dir, bert, out_type="F32")
    build_image(store, root, bert, model.format(_cmd("--embedding")), "embed:1")
    build_image(store, root, bert, model.format(_cmd("--embedding", "--pooling", "cls", "--embd-normalize", "-1")),
                "embed-cls:1")
    from .helpers.tiny_lora import make_tiny_lora

    adapter = root / "adapter.gguf"
    convert(make_tiny_lora(root / "hf-llama", root / "hf-adapter"), adapter, out_type="F32", model_class="lora",
            base=root / "hf-llama")
    packerfile = ("FROM scratch\nCOPY tiny.gguf /models/tiny.gguf\nCOPY adapter.gguf /models/adapter.gguf\n"
                  f"CMD {_cmd('--lora', '/models/adapter.gguf')}\n")
    context = write_context(root / "ctx-lora", packerfile, {"tiny.gguf": chat.read_bytes(),
                                                           "adapter.gguf": adapter.read_bytes()})
    do_build(store, context, tags=("lora:1",))
    return root / "home"


def _logged(log: str, name: str) -> str:
    found = re.findall(rf"llama_context: {name} += (\S+)", log)
    assert found, f"no 'llama_context: {name}' line in the server's log:\n{log[-3000:]}"
    return found[-1]


def test_sampling_options_are_request_defaults(home: Path) -> None:
    with served(home, "sampling:1") as server:
        assert server.runtime == "llama-cpp-python"
        assert server.get("/health") == {"status": "ok"}
        assert [m["id"] for m in server.get("/v1/models")["data"]] == ["sampling:1"]
        plain = server.post("/v1/completions", {"prompt": PROMPT})
        assert plain["model"] == "sampling:1"
        assert (plain["usage"]["completion_tokens"], plain["choices"][0]["finish_reason"]) == (5, "length")  # -n 5
        # --temp 0.2 -s 7 are the defaults: the same request spelling them out samples the same text
        explicit = server.post("/v1/completions", {"prompt": PROMPT, "temperature": 0.2, "seed": 7, "max_tokens": 5})
        assert explicit["choices"][0]["text"] == plain["choices"][0]["text"]
        # a request's own fields win
        assert server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 2})["usage"]["completion_tokens"] == 2
        chat = server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
        assert chat["usage"]["completion_tokens"] <= 5 and chat["model"] == "sampling:1"
        log = server.log_text()
    # no -c: the model's training context, as llama-server; its batch sizes, flash attention auto, one slot
    assert [_logged(log, n) for n in ("n_ctx", "n_batch", "n_ubatch", "flash_attn", "n_seq_max")] == [
        "2048", "2048", "512", "auto", "1"]


def test_context_size_and_the_packaged_system_prompt(home: Path) -> None:
    with served(home, "chat:1") as server:
        assert [m["id"] for m in server.get("/v1/models")["data"]] == ["chat:1"]
        user = [{"role": "user", "content": "hello there"}]
        chat = server.post("/v1/chat/completions", {"messages": user, "max_tokens": 3, "temperature": 0})
        # the CAT'd system prompt is in the prompt (its rendering is checked in test_run.py)
        raw = server.post("/v1/completions", {"prompt": '<|user|> hello there "ok"\n<|assistant|>', "max_tokens": 1})
        assert chat["usage"]["prompt_tokens"] > raw["usage"]["prompt_tokens"] + 5
        assert _logged(server.log_text(), "n_ctx") == "256"  # -c 256


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def _bert_ids(home: Path, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(home.parent / "hf-bert")(text)["input_ids"])


def test_embeddings_are_pooled_and_normalised_as_llama_server(home: Path) -> None:
    texts = ["a tiny test", "another one, a little longer"]
    with served(home, "embed:1") as server:
        assert server.get("/health") == {"status": "ok"}
        answer = server.post("/v1/embeddings", {"input": texts})
        assert answer["model"] == "embed:1"
        vectors = [item["embedding"] for item in answer["data"]]
        assert [round(_norm(v), 5) for v in vectors] == [1.0, 1.0]  # --embd-normalize 2 by default
        for text, vector in zip(texts, vectors, strict=True):  # the GGUF's pooling: mean, from 1_Pooling
            assert cosine(np.array(vector), hf_pooled_embedding(home.parent / "hf-bert", _bert_ids(home, text),
                                                                "mean")) > 0.999
    with served(home, "embed-cls:1") as server:  # --pooling cls --embd-normalize -1
        vector = server.post("/v1/embeddings", {"input": texts[0]})["data"][0]["embedding"]
        cls = hf_pooled_embedding(home.parent / "hf-bert", _bert_ids(home, texts[0]), "cls")
        assert cosine(np.array(vector), cls) > 0.999
        assert _norm(vector) == pytest.approx(float(np.linalg.norm(cls)), rel=1e-3)  # not normalised


def test_lora_adapter_is_applied(home: Path) -> None:
    import llama_cpp

    request = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "repeat_penalty": 1.0}
    with served(home, "lora:1") as server:
        adapted = server.post("/v1/completions", request)["choices"][0]["text"]
    with served(home, "sampling:1") as server:
        base = server.post("/v1/completions", request)["choices"][0]["text"]
    root = home.parent
    reference = llama_cpp.Llama(str(tiny_chat_gguf(root)), lora_path=str(root / "adapter.gguf"), n_ctx=256,
                                n_threads=1, verbose=False)
    expected = reference.create_completion(PROMPT, max_tokens=8, temperature=0, repeat_penalty=1.0)
    assert adapted == expected["choices"][0]["text"]  # type: ignore[index]
    assert adapted != base


def test_what_llama_cpp_python_cannot_do_goes_to_llama_server(home: Path, tmp_path: Path) -> None:
    refused = run_cli(["run", "slots:1", "--dry-run"], home)
    assert refused.code == 1
    assert ("llama-cpp-python's server cannot honour -np 2 (it answers one request at a time (one slot)), and no "
            "llama.cpp backend with llama-server is installed: ggufpack backends install llama.cpp") in refused.err
    from .helpers.llamacpp_build import build_available, install_into

    if not build_available():
        pytest.skip("no llama.cpp CPU build cached and no local sources to build one")
    with_backend = tmp_path / "home"
    shutil.copytree(home, with_backend, symlinks=True, ignore=shutil.ignore_patterns("state"))
    install_into(with_backend)
    chosen = run_cli(["run", "slots:1", "--dry-run"], with_backend)
    assert chosen.code == 0, chosen.err
    assert "/llama-server -m " in chosen.out and " -np 2 " in chosen.out
    assert "runtime llama-server: llama-cpp-python's server cannot honour -np 2" in chosen.err
    # what it can honour stays on the default runtime
    assert "ggufpack.run.lcpp_server" in run_cli(["run", "sampling:1", "--dry-run"], with_backend).out


def test_request_defaults_fill_only_what_a_request_lacks() -> None:
    import asyncio

    from ggufpack.run.lcpp_server import RequestDefaults, normalized, with_defaults

    defaults = {"temperature": 0.2, "max_tokens": 5, "stop": ["END"]}
    filled = json.loads(with_defaults(b'{"prompt": "x", "temperature": 1.0, "stop": []}', defaults))
    assert filled == {"prompt": "x", "temperature": 1.0, "max_tokens": 5, "stop": ["END"]}  # empty stop: -r's words
    assert json.loads(with_defaults(b'{"n_predict": -1}', defaults))["max_tokens"] is None  # llama-server's name
    assert with_defaults(b"not json", defaults) == b"not json" and with_defaults(b"[1]", defaults) == b"[1]"
    assert normalized([3.0, 4.0], 2) == pytest.approx([0.6, 0.8]) and normalized([3.0, 4.0], -1) == [3.0, 4.0]
    assert normalized([3.0, -4.0], 1) == pytest.approx([3 / 7, -4 / 7])
    assert normalized([1.0, -2.0], 0) == pytest.approx([16380.0, -32760.0])  # the int16 range

    seen: list[tuple[bytes, list[tuple[bytes, bytes]]]] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        body, more = b"", True
        while more:
            message = await receive()  # type: ignore[operator]
            body, more = body + message.get("body", b""), message.get("more_body", False)
        seen.append((body, scope["headers"]))

    async def post(path: str, chunks: list[bytes]) -> None:
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

        async def receive() -> dict:
            return messages.pop(0)

        scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", b"99")]}
        await RequestDefaults(app, defaults)(scope, receive, None)  # type: ignore[arg-type]

    asyncio.run(post("/v1/completions", [b'{"prompt":', b' "x"}']))
    asyncio.run(post("/extras/tokenize", [b'{"input": "x"}']))
    body, headers = seen[0]
    assert json.loads(body) == {"prompt": "x", **defaults} and (b"content-length", str(len(body)).encode()) in headers
    assert seen[1][0] == b'{"input": "x"}'  # other routes pass untouched
