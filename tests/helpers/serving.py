"""Serving a built image for a test: ``ggufpack run --detach`` on a free port, spoken to over real HTTP,
stopped by ``ggufpack stop ID`` (its process killed by PID should that fail); the server's own log
(llama.cpp's context and buffer lines) is there to read while it runs (``stop`` removes it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .builds import run_cli
from .tiny_run import free_port

#: straight to the server: an ``http_proxy`` of the environment must not take loopback requests away
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Served:
    id: str
    url: str
    runtime: str
    log: Path
    pid: int

    def get(self, path: str) -> Any:
        with _DIRECT.open(f"{self.url}{path}", timeout=60) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with _DIRECT.open(request, timeout=120) as response:
            return json.loads(response.read())

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def served(home: Path, ref: str, *args: str) -> Iterator[Served]:
    """``ggufpack run REF --detach -p PORT ARGS``: the running server; stopped on leaving."""
    port = free_port()
    started = run_cli(["run", ref, "-d", "-p", str(port), *args], home, timeout=180)
    assert started.code == 0, started.err
    run_id = started.out.strip()
    record = next(r for r in json.loads(run_cli(["ps", "--format", "json"], home).out) if r["id"] == run_id)
    try:
        yield Served(run_id, record["url"], record["runtime"], Path(record["log"]), record["pid"])
    finally:
        if run_cli(["stop", run_id], home).code != 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record["pid"], signal.SIGKILL)
