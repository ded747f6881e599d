"""The estimate as a table (binary units, in the spirit of gguf-packer's) or as JSON (bytes)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ggufpack.estimate.rows import Row

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def binary_size(n: int) -> str:
    """``1536`` → ``1.50 KiB``: powers of 1024, two decimals."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.2f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    raise AssertionError("unreachable")


def _yes(flag: bool) -> str:
    return "Yes" if flag else "No"


def table(rows: Sequence[Row]) -> str:
    """One line per row: settings, then RAM and each GPU's layers, UMA and NONUMA totals; on a machine
    without GPUs (no device in the rows) the RAM alone."""
    n_gpus = len(rows[0].devices.gpus) if rows else 0
    head = ["ARCH", "CONTEXT SIZE", "BATCH SIZE (L / P)", "FLASH ATTENTION", "MMAP LOAD", "EMBEDDING ONLY"]
    if n_gpus:
        head += ["OFFLOAD LAYERS", "FULL OFFLOADED", "RAM LAYERS", "RAM UMA", "RAM NONUMA"]
    else:
        head += ["RAM"]
    for i in range(n_gpus):
        head += [f"VRAM {i} LAYERS", f"VRAM {i} UMA", f"VRAM {i} NONUMA"]
    lines = [head]
    for row in rows:
        data = row.to_json()
        host = row.devices.host
        line = [str(data["architecture"]), str(data["context_size"]), f"{data['batch_size']} / {data['ubatch_size']}",
                _yes(bool(data["flash_attention"])), _yes(bool(data["mmap"])), _yes(bool(data["embedding_only"]))]
        if n_gpus:
            line += [str(data["offload_layers"]), _yes(row.full_offload), str(host.layers),
                     binary_size(host.total + sum(g.total for g in row.devices.gpus)), binary_size(host.total)]
        else:
            line += [binary_size(host.total)]
        for gpu in row.devices.gpus:
            line += [str(gpu.layers), binary_size(gpu.total), binary_size(gpu.total)]
        lines.append(line)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in lines)


def as_json(source: str, rows: Sequence[Row], runtime: str | None = None) -> str:
    head: dict[str, object] = {"source": source}
    if runtime is not None:
        head["runtime"] = runtime
    return json.dumps({**head, "estimates": [r.to_json() for r in rows]}, indent=2)
