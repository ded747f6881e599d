"""``ggufpack run``: serve a model image with llama.cpp behind an OpenAI-compatible API.

- :mod:`.image`: the stored image opened for running (CMD, its files in the store);
- :mod:`.chat`: the packaged system prompt folded into the chat template;
- :mod:`.cmdline`: CMD → the server's argument list (paths rebased, options translated);
- :mod:`.runtimes`: llama-cpp-python's server, a llama-server binary, docker;
- :mod:`.server`: port check, start, health wait, signal forwarding, stop;
- :mod:`.detached`: records of detached servers for ``ps`` and ``stop``;
- :mod:`.lcpp_server`: the launcher of llama-cpp-python's server with a Jinja chat template.
- :mod:`.interactive`: ``run REF PROMPT`` and ``run -it REF``, a private server and its client
  (:mod:`.client`, the standard library's HTTP).
"""

#: ``run --runtime`` choices (here, so that the CLI can offer them without importing the runtimes)
RUNTIMES = ("auto", "llama-cpp-python", "llama-server", "docker")
#: where a server listens unless told (llama-server's default port)
DEFAULT_PORT = 8080
#: how long to wait for a starting server to answer, in seconds
DEFAULT_TIMEOUT_S = 300.0
