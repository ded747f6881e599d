"""A minimal gateway frontend that proves the protocol end to end (``python3 -m ggufpack.frontend.probe``).

It pings the gateway, solves an LLB that writes ``/hello.txt`` and ``/gateway.json`` (the caps and options
it saw) into scratch with one FileOp, reads the result back with ranged ``ReadFile``/``StatFile``/``ReadDir``,
also reads the Dockerfile from the ``dockerfile`` local source, and returns the ref with an image config.
The engineer continuing issue 15 replaces it with ``ggufpack frontend serve``.
"""

from __future__ import annotations

import json
import sys
import traceback

from . import llb
from .gateway import LLBBridge, frontend_options, log

HELLO = b"hello from the ggufpack frontend\n"
EXEC_SCRIPT = "open('/out/copied.txt', 'wb').write(open('/in/hello.txt', 'rb').read().upper())"


def main() -> int:
    options = frontend_options()
    bridge = LLBBridge()
    try:
        pong = bridge.ping()
        log("frontend caps:", sorted(c for c, on in bridge.frontend_caps.items() if on))
        log("llb caps:", sorted(c for c, on in bridge.llb_caps.items() if on))
        seen: dict[str, object] = {
            "options": options,
            "frontend_caps": bridge.frontend_caps,
            "llb_caps": bridge.llb_caps,
            "workers": [{"id": w.ID, "platforms": [f"{p.OS}/{p.Architecture}" for p in w.platforms]}
                        for w in pong.Workers],
        }
        import os

        session = os.environ.get("BUILDKIT_SESSION_ID", "")
        # the Dockerfile through the "dockerfile" local source, as a real frontend reads its Packerfile
        try:
            name = options.get("filename", "Dockerfile")
            src = llb.local("dockerfile", session_id=session, include=[name], shared_key="dockerfile",
                            custom_name="[probe] load build definition")
            ref = bridge.solve(llb.marshal(src))
            stat = bridge.stat_file(ref, name)
            seen["dockerfile"] = {"name": name, "size": stat.size, "mode": stat.mode,
                                  "head": bridge.read_file(ref, name, 0, 40).decode("utf-8", "replace"),
                                  "dir": [e.path for e in bridge.read_dir(ref, "/")]}
        except Exception as e:  # recorded, not fatal: the probe is about the protocol
            seen["dockerfile_error"] = str(e)
        state = (llb.FileOps(None, custom_name="[probe] write files")
                 .mkfile("/hello.txt", HELLO)
                 .mkdir("/etc/ggufpack")
                 .mkfile("/gateway.json", json.dumps(seen, indent=1, sort_keys=True).encode())
                 .output())
        # an exec op in the frontend's own image: the input mounted read-only, the result on a scratch mount
        frontend_image = options.get("source", "")
        if frontend_image and options.get("build-arg:PROBE_EXEC", "1") == "1":
            root = llb.image(frontend_image, name="[probe] frontend image")
            outputs = llb.exec_op(root, ["python3", "-c", EXEC_SCRIPT], custom_name="[probe] exec in frontend image",
                                  mounts=[llb.Mount("/in", state, readonly=True),
                                          llb.Mount("/out", None, output=True)])
            state = (llb.FileOps(state, custom_name="[probe] copy exec result")
                     .copy(outputs[1], "/copied.txt", "/copied.txt").output())
        ref = bridge.solve(llb.marshal(state))
        part = bridge.read_file(ref, "/hello.txt", 6, 4)
        stat = bridge.stat_file(ref, "/hello.txt")
        entries = sorted(e.path for e in bridge.read_dir(ref, "/"))
        log("solved", ref, "ranged read", part, "size", stat.size, "root", entries)
        if part != HELLO[6:10] or stat.size != len(HELLO):
            raise RuntimeError(f"ReadFile/StatFile gave {part!r}, {stat.size}")
        config = {
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/hello.txt"], "Labels": {"org.ggufpack.probe": "1",
                                                          "org.ggufpack.probe.ranged-read": part.decode()}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
        bridge.return_result(ref, {"containerimage.config": json.dumps(config).encode()})
        return 0
    except Exception as e:
        traceback.print_exc()
        return bridge.fail(f"ggufpack probe frontend: {e}")
    finally:
        bridge.close()


if __name__ == "__main__":
    sys.exit(main())
