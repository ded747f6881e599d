"""The arithmetic: what llama.cpp allocates, component by component, device by device.

Each rule follows the vendored llama.cpp (``src/llama-model.cpp`` ``load_tensors``,
``src/llama-context.cpp``, ``src/llama-kv-cache.cpp``, ``src/llama-kv-cache-iswa.cpp``):

- **Layer placement** (``-ngl N``): blocks and the output layer are numbered 0..n_layer (output last);
  the last N of them go to the GPUs, split by ``--tensor-split`` proportions; token embeddings always
  stay on the host.
- **KV cache**: ``n_ctx`` is padded to 256; with separate slots (not unified) each of the ``n_seq``
  streams holds ``pad(n_ctx / n_seq, 256)`` cells; per layer, K is ``row_size(ctk, head_k·n_head_kv)``
  bytes per cell and V likewise (V's width is the largest of all layers when it is stored transposed,
  i.e. without flash attention). Sliding-window layers (Gemma 2/3...) get their own cache of
  ``pad(min(n_ctx_seq, n_swa·(n_seq if unified else 1) + n_ubatch), 256)`` cells unless ``--swa-full``.
  Encoders (BERT...) have no KV cache. The cache of a layer lives on its device, or on the host with
  ``--no-kv-offload``.
- **Output buffer** (host): ``4·n_seq·(n_vocab + n_embd if embeddings)`` bytes at start-up.
- **Outputs**: the graph is reserved for ``min(n_tokens, n_outputs_max)`` outputs (``n_outputs_max`` 0 =
  the batch, the C API's default; llama-server sets one per slot for a generating model).
- **Compute buffer**: the worst-case graph is reserved for one micro-batch (``n_tokens = min(n_ctx,
  n_ubatch)`` tokens) with the full KV cache in view (``n_kv`` = cells per stream). ggml's allocator
  reuses memory as tensors die, so the buffer is the peak of three phases, each calibrated against
  llama.cpp's own figures (see ``tests/test_estimate_accuracy.py``):

  - attention: the KQ scores (f32, ``n_kv·n_tokens·n_head``; absent with flash attention) plus about
    five ``n_embd``-wide activations (residual, Q/K/V, attention output and the holes they leave; six
    in an encoder without KV cache, BERT);
  - feed-forward: three ``n_ff``-wide activations for a gated FFN (gate, up, their product; fewer when
    ``n_ff`` is narrow enough for the holes the attention output and the FFN norm leave, see
    ``_gated_ffn_tensors_on_top``), one for an ungated one, or the routed experts'
    ``n_ff_exp·n_expert_used`` (×3) plus a shared expert, and four
    ``n_embd``-wide ones (three in an encoder);
  - output: the logits (f32, ``n_vocab·n_outputs``) and two ``n_embd``-wide activations.

  The graph inputs stay allocated during the first two phases: one KQ mask per cache (f32, f16 with
  flash attention, ``n_kv·n_tokens``), token ids, positions and output ids, and the cache row indices
  (i64; one per value element for the transposed V cache).
- **Weights**: each tensor's bytes, padded to the file's alignment, on its layer's device. With mmap the
  host weights are mapped from the file (page cache, shared, evictable): reported, but flagged.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ggufpack.estimate.hparams import Hparams, layer_of, read_hparams
from ggufpack.estimate.params import Options, cache_type, row_bytes
from ggufpack.gguf_info import GGUFHeader

F32 = 4
F16 = 2
I64 = 8
I32 = 4
KV_PAD = 256
HOST = -1

_INPUT_TENSORS = ("token_embd.", "token_types.", "position_embd.", "token_embd_norm.")


@dataclass
class Usage:
    """Bytes one device (the host or a GPU) holds, by component."""

    weights: int = 0
    kv: int = 0
    compute: int = 0
    output: int = 0
    layers: int = 0
    """Model layers (blocks, and the output layer as llama.cpp counts it) placed on this device."""

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute + self.output

    def add(self, other: Usage) -> None:
        self.weights += other.weights
        self.kv += other.kv
        self.compute += other.compute
        self.output += other.output

    def to_json(self) -> dict[str, int]:
        return {"layers": self.layers, "weights": self.weights, "kv": self.kv, "compute": self.compute,
                "output": self.output, "total": self.total}


@dataclass
class Placement:
    """Where every one of ``n_layer + 1`` layers goes (``HOST`` or a GPU index)."""

    devices: list[int]
    n_gpus: int

    @property
    def output(self) -> int:
        return self.devices[-1]

    def of(self, il: int) -> int:
        return self.devices[il]


def place_layers(n_layer: int, gpu_layers: int, split: tuple[float, ...], gpus: int = 1) -> Placement:
    """llama.cpp's layer assignment: the last ``gpu_layers`` of the ``n_layer + 1`` layers to the GPUs
    (``gpus`` of them unless ``split`` names more; none: every layer on the host)."""
    n_gpus = len(split) or gpus
    n_gpu_layers = 0 if n_gpus == 0 else n_layer + 1 if gpu_layers < 0 else min(gpu_layers, n_layer + 1)
    start = n_layer + 1 - n_gpu_layers
    weights = split or (1.0,)
    total = sum(weights)
    points, acc = [], 0.0
    for w in weights:
        acc += w
        points.append(acc / total)
    devices = [
        HOST if il < start else min(bisect.bisect_right(points, (il - start) / n_gpu_layers), n_gpus - 1)
        for il in range(n_layer + 1)
    ]
    return Placement(devices, n_gpus)


def _padded(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


@dataclass
class Devices:
    """The host's usage and each GPU's."""

    host: Usage = field(default_factory=Usage)
    gpus: list[Usage] = field(default_factory=list)

    def at(self, device: int) -> Usage:
        return self.host if device == HOST else self.gpus[device]

    def add(self, other: Devices) -> None:
        self.host.add(other.host)
        for mine, theirs in zip(self.gpus, other.gpus, strict=True):
            mine.add(theirs)


def weights_by_device(header: GGUFHeader, placement: Placement, devices: Devices) -> None:
    """Each tensor on its layer's device; input embeddings on the host; the rest with the output layer."""
    n_layer = len(placement.devices) - 1
    for t in header.tensors:
        il = layer_of(t.name)
        if t.name.startswith(_INPUT_TENSORS):
            device = HOST
        elif il is not None:
            device = placement.of(min(il, n_layer - 1)) if n_layer else HOST
        else:
            device = placement.output
        devices.at(device).weights += _padded(t.n_bytes, header.alignment)


@dataclass(frozen=True)
class Context:
    """The context llama.cpp builds from the options (``llama_context`` constructor)."""

    n_ctx: int
    n_seq: int
    n_stream: int
    kv_size: int
    """Cells per stream of the full-attention cache."""
    swa_size: int
    n_tokens: int
    """Tokens of the worst-case micro-batch the compute graph is reserved for."""
    n_outputs: int


def make_context(hp: Hparams, options: Options) -> Context:
    n_ctx = _padded(options.ctx_size or hp.n_ctx_train, KV_PAD)
    n_seq = options.n_seq
    causal = hp.has_kv_cache
    n_batch = min(n_ctx, options.batch_size) if causal else options.batch_size
    n_ubatch = min(n_batch, options.ubatch_size)
    if options.unified:
        kv_size, n_stream = n_ctx, 1
    else:
        kv_size, n_stream = _padded(max(n_ctx // n_seq, 1), KV_PAD), n_seq
        n_ctx = kv_size * n_seq
    swa_size = kv_size
    if any(hp.swa_layers) and not options.swa_full:
        window = hp.n_swa * (n_seq if options.unified else 1) + n_ubatch
        swa_size = _padded(min(kv_size, window), KV_PAD)
    n_tokens = min(n_ctx, n_ubatch)
    return Context(n_ctx=n_ctx, n_seq=n_seq, n_stream=n_stream, kv_size=kv_size, swa_size=swa_size,
                   n_tokens=n_tokens, n_outputs=min(n_tokens, options.outputs_max or n_batch))


def kv_by_device(hp: Hparams, ctx: Context, options: Options, placement: Placement, devices: Devices) -> None:
    if not hp.has_kv_cache:
        return
    type_k = cache_type(options.cache_type_k, "--cache-type-k")
    type_v = cache_type(options.cache_type_v, "--cache-type-v")
    v_trans = not options.flash_attn_on
    v_width_max = max(hp.n_embd_v_gqa(il) for il in range(hp.n_layer))
    for il in range(hp.n_layer):
        if not hp.n_head_kv[il]:
            continue
        cells = (ctx.swa_size if hp.swa_layers[il] else ctx.kv_size) * ctx.n_stream
        v_width = v_width_max if v_trans else hp.n_embd_v_gqa(il)
        size = (row_bytes(type_k, hp.n_embd_k_gqa(il)) + row_bytes(type_v, v_width)) * cells
        devices.at(placement.of(il) if options.kv_offload else HOST).kv += size


def output_buffer(hp: Hparams, ctx: Context, options: Options) -> int:
    return F32 * ctx.n_seq * (hp.n_vocab + (hp.n_embd if options.embedding else 0))


@dataclass(frozen=True)
class Phases:
    """Peak bytes of the compute graph's phases, and the graph inputs alive during the layers."""

    inputs: int
    attention: int
    ffn: int
    output: int

    @property
    def layers(self) -> int:
        return self.inputs + max(self.attention, self.ffn)


def _ffn_width(hp: Hparams) -> int:
    widths = []
    for il in range(hp.n_layer):
        if il in hp.moe_layers:
            widths.append(3 * (hp.n_ff_exp * hp.n_expert_used + hp.n_ff_shexp))
        elif hp.gated_ffn:
            widths.append(hp.n_ff[il] * _gated_ffn_tensors_on_top(hp, il))
        else:
            widths.append(hp.n_ff[il])
    return max(widths, default=0)


def _gated_ffn_tensors_on_top(hp: Hparams, il: int) -> int:
    """How many of a gated FFN's three ``n_ff``-wide tensors (gate, up, their product) ggml's allocator
    stacks above the n_embd-wide ones, rather than placing them in holes the layer left below.

    When the FFN starts, the attention output (``n_head·head_v`` wide) has been freed; once ``up`` is
    computed the FFN-norm output (``n_embd``) below it is freed too, and the two adjacent holes merge.
    ggml-alloc's best fit puts the product there when ``n_ff <= n_embd + n_head·head_v``; and ``gate``
    fills the attention output's hole when ``n_ff`` is exactly that wide (a narrower ``gate`` leaves
    a fragment that, over the following layers, costs as much as the hole saves: measured)."""
    n_ff, hole = hp.n_ff[il], hp.n_head[il] * hp.head_v
    if not hole or n_ff < hole:
        return 3
    return 3 - (n_ff <= hp.n_embd + hole) - (n_ff == hole)


def compute_phases(hp: Hparams, ctx: Context, options: Options) -> Phases:
    n = ctx.n_tokens
    fa = options.flash_attn_on
    caches = []  # cells in view for each KV cache (full attention, sliding window)
    if not hp.has_kv_cache:
        caches = [n]
    else:
        if not all(hp.swa_layers):
            caches.append(ctx.kv_size)
        if any(hp.swa_layers):
            caches.append(ctx.swa_size)
    inputs = 3 * I32 * n
    for n_kv in caches:
        inputs += n_kv * n * (F16 if fa else F32)
        if hp.has_kv_cache:
            v_rows = 1 if fa else max(hp.n_embd_v_gqa(il) for il in range(hp.n_layer))
            inputs += I64 * n * (1 + v_rows)
    kq = 0 if fa else max(hp.n_head, default=0) * max(caches)
    # n_embd-wide activations alive in each phase: a post-norm encoder (BERT: biases, LayerNorm after the
    # residual) holds one more during attention and one fewer during the feed-forward than a decoder
    attention_width, ffn_width = (5, 4) if hp.has_kv_cache else (6, 3)
    return Phases(
        inputs=inputs,
        attention=F32 * n * (kq + attention_width * hp.n_embd),
        ffn=F32 * n * (_ffn_width(hp) + ffn_width * hp.n_embd),
        output=F32 * (ctx.n_outputs * hp.n_vocab * hp.has_logits + 2 * n * hp.n_embd),
    )


def compute_by_device(phases: Phases, placement: Placement, options: Options, devices: Devices) -> None:
    """Each device running layers reserves the layer phases; the one with the output layer the output
    phase too. A host that runs no layer keeps the inputs and the token embeddings' rows."""
    blocks = set(placement.devices[:-1])
    for device in blocks:
        peak = phases.layers
        if device == placement.output:
            peak = max(peak, phases.output)
        devices.at(device).compute = peak
    if placement.output not in blocks:
        devices.at(placement.output).compute = max(devices.at(placement.output).compute, phases.output)
    if HOST not in blocks and not options.kv_offload:
        devices.host.compute = max(devices.host.compute, phases.layers)
    if devices.host.compute == 0:
        devices.host.compute = phases.inputs


def count_layers(placement: Placement, devices: Devices) -> None:
    for device in placement.devices:
        devices.at(device).layers += 1


@dataclass(frozen=True)
class ModelEstimate:
    hparams: Hparams
    context: Context
    devices: Devices
    gpu_layers: int
    """Layers offloaded, as llama.cpp counts them (at most n_layer + 1)."""


def estimate_model(header: GGUFHeader, options: Options, gpu_layers: int) -> ModelEstimate:
    """One model (the main one or the drafter) with ``gpu_layers`` offloaded."""
    hp = read_hparams(header)
    ctx = make_context(hp, options)
    placement = place_layers(hp.n_layer, gpu_layers, options.tensor_split, options.gpus)
    devices = Devices(gpus=[Usage() for _ in range(placement.n_gpus)])
    count_layers(placement, devices)
    weights_by_device(header, placement, devices)
    kv_by_device(hp, ctx, options, placement, devices)
    devices.host.output = output_buffer(hp, ctx, options)
    compute_by_device(compute_phases(hp, ctx, options), placement, options, devices)
    offloaded = sum(1 for d in placement.devices if d != HOST)
    return ModelEstimate(hparams=hp, context=ctx, devices=devices, gpu_layers=offloaded)


def extra_weights(header: GGUFHeader, placement: Placement, devices: Devices, *, offload: bool) -> None:
    """A projector or adapter: weights only, with the layers they touch (or GPU 0 / the host)."""
    for t in header.tensors:
        il = layer_of(t.name)
        if il is not None and il < len(placement.devices) - 1:
            device = placement.of(il)
        else:
            device = 0 if offload and devices.gpus else HOST
        devices.at(device).weights += _padded(t.n_bytes, header.alignment)
