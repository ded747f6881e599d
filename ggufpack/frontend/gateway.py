"""The client side of BuildKit's frontend gateway (service ``moby.buildkit.v1.frontend.LLBBridge``).

BuildKit runs the frontend image's entrypoint with the gateway's gRPC server on the other end of the
process's stdin (requests from us) and stdout (responses to us): one HTTP/2 connection with prior
knowledge, no TLS. ``grpcio`` only dials sockets, so :class:`StdioBridge` listens on an abstract unix
socket (no file needed, the root filesystem may be read-only), lets grpcio dial it, and pumps bytes
between the one accepted connection and fds 0/1. Before that, fds 0 and 1 are moved out of the way
(``/dev/null`` on 0, stderr on 1) so that a stray ``print`` cannot corrupt the HTTP/2 stream; logs go
to stderr, which BuildKit passes to the daemon's log.

Frontend options arrive in the environment: ``BUILDKIT_FRONTEND_OPT_<n>=<key>=<value>`` (``filename``,
``target``, ``build-arg:NAME``, ``platform``, ``context``...), with ``BUILDKIT_SESSION_ID``,
``BUILDKIT_WORKERS`` (JSON) and ``BUILDKIT_EXPORTEDPRODUCT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import traceback
from collections.abc import Mapping
from typing import Any

from .protos import METHODS, SERVICE, gateway, rpc

FRONTEND_OPT_PREFIX = "BUILDKIT_FRONTEND_OPT_"
MAX_MESSAGE = 128 << 20


def frontend_options(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    options: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith(FRONTEND_OPT_PREFIX):
            name, _, val = value.partition("=")
            options[name] = val
    return options


def log(*parts: object) -> None:
    print("ggufpack-frontend:", *parts, file=sys.stderr, flush=True)


class StdioBridge:
    """An abstract unix socket whose one connection is spliced onto this process's stdin/stdout."""

    def __init__(self, read_fd: int | None = None, write_fd: int | None = None) -> None:
        if read_fd is None or write_fd is None:
            read_fd, write_fd = os.dup(0), os.dup(1)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            os.dup2(2, 1)  # stdout -> stderr from now on
            sys.stdout = sys.stderr
        self.read_fd, self.write_fd = read_fd, write_fd
        self.name = f"ggufpack-gateway-{os.getpid()}-{id(self):x}"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind("\0" + self.name)
        self._listener.listen(1)
        self._accepted = threading.Event()
        self.closed = threading.Event()
        threading.Thread(target=self._accept, name="gateway-accept", daemon=True).start()

    @property
    def target(self) -> str:
        return f"unix-abstract:{self.name}"

    def _accept(self) -> None:
        conn, _ = self._listener.accept()
        self._listener.close()  # one connection only: the pipe cannot be restarted
        self._accepted.set()
        threading.Thread(target=self._pump_in, args=(conn,), name="gateway-in", daemon=True).start()
        threading.Thread(target=self._pump_out, args=(conn,), name="gateway-out", daemon=True).start()

    def _pump_in(self, conn: socket.socket) -> None:  # BuildKit -> grpcio
        try:
            while data := os.read(self.read_fd, 1 << 16):
                conn.sendall(data)
        except OSError:
            pass
        finally:
            self.closed.set()
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)

    def _pump_out(self, conn: socket.socket) -> None:  # grpcio -> BuildKit
        try:
            while data := conn.recv(1 << 16):
                view = memoryview(data)
                while view:
                    view = view[os.write(self.write_fd, view):]
        except OSError:
            pass
        finally:
            self.closed.set()


class GatewayError(RuntimeError):
    pass


class LLBBridge:
    """Typed calls to the gateway: ``ping()``, ``solve(definition)``, ``read_file(ref, path, offset, length)``..."""

    def __init__(self, target: str | None = None, *, bridge: StdioBridge | None = None) -> None:
        import grpc  # imported here: the LLB/proto modules work without grpcio

        self._grpc = grpc
        if target is None:
            bridge = bridge or StdioBridge()
            target = bridge.target
        self.bridge = bridge
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.default_authority", "localhost"),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.enable_retries", 0),
            ("grpc.use_local_subchannel_pool", 1),
        ])
        self._calls: dict[str, Any] = {}
        for method, (_request, response) in METHODS.items():
            response_class = getattr(gateway, response)
            self._calls[method] = self.channel.unary_unary(
                f"/{SERVICE}/{method}",
                request_serializer=lambda m: m.SerializeToString(deterministic=True),
                response_deserializer=response_class.FromString,
            )
        self.frontend_caps: dict[str, bool] = {}
        self.llb_caps: dict[str, bool] = {}
        self.workers: list[Any] = []

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return self._calls[method](request, timeout=timeout)
        except self._grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            raise GatewayError(f"{method}: {details}" + (f" ({code.name})" if code else "")) from None

    def ping(self) -> Any:
        pong = self.call("Ping", gateway.PingRequest(), timeout=60)
        self.frontend_caps = {c.ID: c.Enabled for c in pong.FrontendAPICaps}
        self.llb_caps = {c.ID: c.Enabled for c in pong.LLBCaps}
        self.workers = list(pong.Workers)
        return pong

    def has(self, cap: str) -> bool:
        return self.frontend_caps.get(cap, False)

    def solve(self, definition: Any, *, frontend: str = "", frontend_opt: Mapping[str, str] | None = None,
              evaluate: bool = False) -> str:
        """Solve ``definition``; returns the ref id for read_file/read_dir/stat_file/Return."""
        req = gateway.SolveRequest(Frontend=frontend, FrontendOpt=dict(frontend_opt or {}),
                                   allowResultReturn=True, Evaluate=evaluate)
        req.Definition.CopyFrom(definition)
        resp = self.call("Solve", req)
        if resp.HasField("result"):
            kind = resp.result.WhichOneof("result")
            if kind == "ref":
                return resp.result.ref.id
            if kind == "refDeprecated":
                return resp.result.refDeprecated
            raise GatewayError(f"Solve returned a {kind} result; one ref was expected")
        return resp.ref

    def read_file(self, ref: str, path: str, offset: int | None = None, length: int | None = None) -> bytes:
        req = gateway.ReadFileRequest(Ref=ref, FilePath=path)
        if offset is not None or length is not None:
            req.Range.Offset = offset or 0
            req.Range.Length = length or 0
        return self.call("ReadFile", req).Data

    def read_dir(self, ref: str, path: str, include_pattern: str = "") -> list[Any]:
        return list(self.call("ReadDir", gateway.ReadDirRequest(Ref=ref, DirPath=path,
                                                                IncludePattern=include_pattern)).entries)

    def stat_file(self, ref: str, path: str) -> Any:
        return self.call("StatFile", gateway.StatFileRequest(Ref=ref, Path=path)).stat

    def resolve_image_config(self, ref: str, *, platform: Any = None, resolve_mode: str = "default",
                             log_name: str = "") -> tuple[str, dict[str, Any]]:
        """The digest and the parsed config of image ``ref``."""
        req = gateway.ResolveImageConfigRequest(Ref=ref, ResolveMode=resolve_mode, LogName=log_name)
        if platform is not None:
            req.Platform.CopyFrom(platform)
        resp = self.call("ResolveImageConfig", req)
        return resp.Digest, json.loads(resp.Config or b"{}")

    def return_result(self, ref: str | None, metadata: Mapping[str, bytes] | None = None) -> None:
        """Hand BuildKit the final result: one ref (None: scratch) and metadata (``containerimage.config``)."""
        result = gateway.Result(metadata=dict(metadata or {}))
        if self.has("proto.refarray") or not self.frontend_caps:
            result.ref.id = ref or ""
        else:
            result.refDeprecated = ref or ""
        self.call("Return", gateway.ReturnRequest(result=result))

    def return_error(self, message: str, code: int = 2) -> None:
        """End the build with an error (``code``: a gRPC status code, 2 UNKNOWN by default)."""
        self.call("Return", gateway.ReturnRequest(error=rpc.Status(code=code, message=message)))

    def fail(self, message: str) -> int:
        """End the build with ``message`` as its error, and the frontend's exit status (1); a bridge that
        cannot even take the error leaves its traceback on stderr (dockerd's log)."""
        try:
            self.return_error(message)
        except Exception:
            traceback.print_exc()
        return 1

    def close(self) -> None:
        self.channel.close()
