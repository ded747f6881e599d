"""Importance matrices computed in this process, the way ``llama-imatrix`` computes them.

llama.cpp evaluates the calibration text chunk by chunk (``--ctx-size`` tokens each, the first one
replaced by BOS when the model adds one; as many chunks per batch as fit in 2048 tokens, each in
its own sequence) with an evaluation callback (``cb_eval`` of the context parameters) that sees
every graph node. For each ``MUL_MAT`` whose weight (src0) is a ``blk.*`` tensor and whose
activations (src1) are F32 with at least 16 rows, and for every ``MUL_MAT_ID`` (MoE experts), the
callback adds the squares of the activations, column by column, into that weight's sums, and counts
the rows (per expert for ``MUL_MAT_ID``): ``tools/imatrix/imatrix.cpp``, ``collect_imatrix``.
The result is written in the GGUF imatrix format (:mod:`.imatrix_file`), which llama-quantize reads.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GGUFPackError, UsageError
from ..progress import QUIET, Progress
from . import ggml
from .imatrix_file import Imatrix, ImatrixEntry, write_imatrix

#: llama-imatrix's defaults: the context of one chunk and the logical batch (-b) chunks are packed into
DEFAULT_CTX_SIZE = 512
BATCH_TOKENS = 2048
UBATCH_TOKENS = 512
#: llama-imatrix ignores matrix products over fewer rows than this (single-token decoding)
MIN_ROWS = 16


@dataclass(frozen=True)
class ImatrixOptions:
    chunks: int | None = None  # at most this many chunks (None: as many as the text holds)
    ctx_size: int = DEFAULT_CTX_SIZE
    threads: int = 0
    #: what goes into ``imatrix.datasets`` (default: the calibration path as given)
    dataset_name: str | None = None


@dataclass(frozen=True)
class ImatrixResult:
    entries: int
    chunks: int
    tokens: int


def _as_floats(t: ggml.GGMLTensor, ptr: Any) -> np.ndarray:
    """The activations of ``t`` (F32) as a (ne3, ne2, ne1, ne0) array, copied out of the backend."""
    nbytes = ggml.lib().ggml_nbytes(ptr)
    buf = np.empty(nbytes, dtype=np.uint8)
    ggml.lib().ggml_backend_tensor_get(ptr, buf.ctypes.data, 0, nbytes)
    shape = tuple(int(t.ne[i]) for i in (3, 2, 1, 0))
    strides = tuple(int(t.nb[i]) for i in (3, 2, 1, 0))
    return np.lib.stride_tricks.as_strided(buf.view(np.float32), shape=shape, strides=strides, writeable=False)


def _weight_name(raw: bytes) -> str:
    """``CUDA0#blk.0.attn_k.weight#0`` → ``blk.0.attn_k.weight`` (llama-imatrix's ``filter_tensor_name``)."""
    name = raw.decode("utf-8", "replace")
    if "#" in name:
        name = name.split("#", 2)[1]
    return name


class _Collector:
    """The evaluation callback's state: per weight, sums of squared activations and row counts."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.error: BaseException | None = None
        self.callback = self._make_callback()

    def _make_callback(self) -> Any:
        import llama_cpp

        def callback(tensor: int, ask: bool, _user: Any) -> bool:
            if self.error is not None:  # the batch is lost anyway: look at nothing more
                return False
            try:
                ptr = ctypes.cast(tensor, ctypes.POINTER(ggml.GGMLTensor))
                return self._ask(ptr.contents) if ask else self._collect(ptr.contents)
            except BaseException as exc:  # an exception cannot cross the C boundary
                self.error = self.error or exc
                return False

        return llama_cpp.ggml_backend_sched_eval_callback(callback)

    @staticmethod
    def _ask(t: ggml.GGMLTensor) -> bool:
        op = ggml.op_name(t.op)
        if op == "MUL_MAT_ID":
            return True
        if op != "MUL_MAT":
            return False
        src1 = t.src[1].contents
        if src1.ne[1] < MIN_ROWS or src1.type != 0:  # GGML_TYPE_F32
            return False
        return _weight_name(t.src[0].contents.name).startswith("blk.")

    def _entry(self, name: str, n_mat: int, ne0: int) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.sums:
            self.sums[name] = np.zeros((n_mat, ne0), dtype=np.float32)
            self.counts[name] = np.zeros(n_mat, dtype=np.int64)
        sums = self.sums[name]
        if sums.shape != (n_mat, ne0):
            raise GGUFPackError(f"inconsistent activation size for {name}: {sums.shape} vs {(n_mat, ne0)}")
        return sums, self.counts[name]

    def _collect(self, t: ggml.GGMLTensor) -> bool:
        src0, src1 = t.src[0].contents, t.src[1].contents
        name = _weight_name(src0.name)
        x = _as_floats(src1, t.src[1])
        if ggml.op_name(t.op) == "MUL_MAT_ID":
            self._collect_experts(t, name, src0, x)
        else:
            self._collect_dense(name, src0, x)
        return True

    def _collect_dense(self, name: str, src0: ggml.GGMLTensor, x: np.ndarray) -> None:
        ne3, ne2, ne1, ne0 = x.shape
        n_mat = int(src0.ne[2] * src0.ne[3])
        sums, counts = self._entry(name, n_mat, ne0)
        for i3 in range(ne3):
            for i2 in range(ne2):
                mat = (i3 % src0.ne[3]) * src0.ne[2] + (i2 % src0.ne[2])
                # row after row into the running sums, in float32, as the tool adds them
                stacked = np.concatenate([sums[mat][None, :], np.square(x[i3, i2])])
                sums[mat] = np.add.reduce(stacked, axis=0)
        if not np.isfinite(sums).all():
            raise GGUFPackError(f"non-finite activations in {name}: the model or the calibration text is broken")
        counts += ne1 * ne2 * ne3 // n_mat

    def _collect_experts(self, t: ggml.GGMLTensor, name: str, src0: ggml.GGMLTensor, x: np.ndarray) -> None:
        ids_t = t.src[2].contents
        n_as, n_ids, n_tokens = int(src0.ne[2]), int(ids_t.ne[0]), int(x.shape[1])
        ids = np.empty(ggml.lib().ggml_nbytes(t.src[2]), dtype=np.uint8)
        ggml.lib().ggml_backend_tensor_get(t.src[2], ids.ctypes.data, 0, ids.size)
        experts = np.lib.stride_tricks.as_strided(
            ids.view(np.int32), shape=(n_ids, n_tokens), strides=(int(ids_t.nb[0]), int(ids_t.nb[1])),
        )
        sums, counts = self._entry(name, n_as, int(x.shape[3]))
        rows = x[0]  # (n_tokens, n_used, ne0)
        for idx in range(n_ids):
            for row in range(n_tokens):
                ex = int(experts[idx, row])
                if not 0 <= ex < n_as:
                    raise GGUFPackError(f"expert id {ex} out of range for {name}")
                counts[ex] += 1
                sums[ex] += np.square(rows[row, idx % x.shape[2]])
        if not np.isfinite(sums).all():
            raise GGUFPackError(f"non-finite activations in {name}: the model or the calibration text is broken")


def _fill_batch(batch: Any, tokens: list[int], bos: int | None, first: int, n_seq: int, n_ctx: int, start: int,
                size: int) -> None:
    """Tokens ``start:start+size`` of chunks ``first..first+n_seq`` (one sequence each), every one with logits
    (so the last layer runs on all rows); a chunk's first token becomes BOS when the model adds one."""
    n = 0
    for seq in range(n_seq):
        offset = (first + seq) * n_ctx + start
        for k in range(size):
            token = bos if (bos is not None and start == 0 and k == 0) else tokens[offset + k]
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, start + k, 1
            batch.seq_id[n][0], batch.logits[n] = seq, True
            n += 1
    batch.n_tokens = n


def _tokenize(model: Any, text: str) -> list[int]:
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(model)
    data = text.encode("utf-8")
    capacity = len(data) + 16
    while True:
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, capacity, True, False)
        if n >= 0:
            return list(buf[:n])
        capacity = -n


def compute_imatrix(model_path: Path, calibration: Path, out: Path, options: ImatrixOptions | None = None,
                    progress: Progress = QUIET) -> ImatrixResult:
    """Compute the importance matrix of ``model_path`` on the text in ``calibration`` into ``out`` (GGUF)."""
    import llama_cpp

    from .inprocess import captured_llama_log

    options = options or ImatrixOptions()
    if options.ctx_size < 1:
        raise UsageError(f"--ctx-size {options.ctx_size}: give a positive number of tokens")
    try:
        text = Path(calibration).read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        raise GGUFPackError(f"cannot read the calibration text {calibration}: {exc.strerror or exc}") from None
    text = text.removesuffix("\n")  # the tool's -f drops one trailing newline
    n_ctx = options.ctx_size
    n_seq = max(1, BATCH_TOKENS // n_ctx)
    n_batch = min(BATCH_TOKENS, n_seq * n_ctx)
    collector = _Collector()
    with captured_llama_log() as log:
        model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), llama_cpp.llama_model_default_params())
        if not model:
            raise GGUFPackError(f"llama.cpp could not load {model_path}\n{''.join(log[-5:]).strip()}")
        try:
            return _run(model, text, collector, out, options, n_ctx, n_seq, n_batch, progress,
                        str(calibration) if options.dataset_name is None else options.dataset_name)
        finally:
            llama_cpp.llama_model_free(model)


def _run(model: Any, text: str, collector: _Collector, out: Path, options: ImatrixOptions, n_ctx: int, n_seq: int,
         n_batch: int, progress: Progress, dataset: str) -> ImatrixResult:
    import llama_cpp

    tokens = _tokenize(model, text)
    if len(tokens) < 2 * n_ctx:
        raise UsageError(
            f"the calibration text is {len(tokens)} tokens; llama-imatrix needs at least 2 x ctx-size = "
            f"{2 * n_ctx}: give more text or a smaller --ctx-size"
        )
    n_chunk = len(tokens) // n_ctx if options.chunks is None else min(options.chunks, len(tokens) // n_ctx)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = n_seq * n_ctx, n_batch, min(UBATCH_TOKENS, n_batch)
    params.n_seq_max = n_seq
    params.n_threads = params.n_threads_batch = options.threads or os.cpu_count() or 1
    params.cb_eval = collector.callback
    params.cb_eval_user_data = None
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        raise GGUFPackError("llama.cpp could not create a context for the importance matrix")
    vocab = llama_cpp.llama_model_get_vocab(model)
    bos = llama_cpp.llama_vocab_bos(vocab) if llama_cpp.llama_vocab_get_add_bos(vocab) else None
    batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
    try:
        with progress.bar("imatrix", total=n_chunk, unit="chunk") as bar:
            for first in range(0, n_chunk, n_seq):
                n_seq_batch = min(n_seq, n_chunk - first)
                llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
                for start in range(0, n_ctx, n_batch):
                    _fill_batch(batch, tokens, bos, first, n_seq_batch, n_ctx, start, min(n_ctx - start, n_batch))
                    status = llama_cpp.llama_decode(ctx, batch)
                    if collector.error is not None:  # the cause, when the callback made the evaluation stop
                        raise collector.error
                    if status != 0:
                        raise GGUFPackError("llama.cpp failed to evaluate the calibration text")
                bar.update(n_seq_batch)
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    if not collector.sums:
        raise GGUFPackError("no matrix multiplication of a blk.* weight was seen: is this a transformer model?")
    imatrix = Imatrix(
        entries={name: ImatrixEntry(collector.sums[name], collector.counts[name]) for name in collector.sums},
        datasets=[dataset], chunk_size=n_ctx,
        chunk_count=int(max(int(c.max()) for c in collector.counts.values()) // n_ctx), has_metadata=True,
    )
    write_imatrix(out, imatrix)
    return ImatrixResult(entries=len(imatrix.entries), chunks=n_chunk, tokens=n_chunk * n_ctx)
