"""One estimate per ``-ngl`` value: the model, its drafter, projector and adapters, summed per device."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ggufpack.errors import UsageError
from ggufpack.estimate.hparams import read_hparams
from ggufpack.estimate.inputs import ModelInputs
from ggufpack.estimate.model import Devices, ModelEstimate, estimate_model, extra_weights, place_layers
from ggufpack.estimate.params import Options


@dataclass(frozen=True)
class Row:
    """What one configuration needs: the main model's facts and every device's usage."""

    options: Options
    model: ModelEstimate
    devices: Devices

    @property
    def full_offload(self) -> bool:
        return self.model.gpu_layers == self.model.hparams.n_layer + 1

    def to_json(self) -> dict[str, object]:
        hp, ctx, o = self.model.hparams, self.model.context, self.options
        host = self.devices.host.to_json()
        host["mmap"] = o.mmap
        host["uma"] = self.devices.host.total + sum(g.total for g in self.devices.gpus)
        return {
            "architecture": hp.arch,
            "context_size": ctx.n_ctx,
            "batch_size": o.batch_size,
            "ubatch_size": o.ubatch_size,
            "parallel": ctx.n_seq,
            "kv_unified": o.unified,
            "cache_type_k": o.cache_type_k,
            "cache_type_v": o.cache_type_v,
            "flash_attention": o.flash_attn_on,
            "mmap": o.mmap,
            "embedding_only": not hp.has_kv_cache or o.embedding,
            "offload_layers": self.model.gpu_layers,
            "full_offloaded": self.full_offload,
            "ram": host,
            "vram": [g.to_json() for g in self.devices.gpus],
        }


def gpu_layer_steps(n_layer: int, options: Options, step: int | None) -> list[int]:
    """The ``-ngl`` values of a ``--gpu-layers-step`` sweep (0, step, ..., all), or just the option's."""
    if step is None:
        return [options.gpu_layers]
    if step < 1:
        raise UsageError("--gpu-layers-step must be at least 1")
    return [*range(0, n_layer + 1, step), n_layer + 1]


def _row(inputs: ModelInputs, options: Options, gpu_layers: int) -> Row:
    main = estimate_model(inputs.model, options, gpu_layers)
    devices = main.devices
    placement = place_layers(main.hparams.n_layer, gpu_layers, options.tensor_split, options.gpus)
    if inputs.drafter is not None:
        draft = estimate_model(inputs.drafter, replace(options, parallel=1, kv_unified=True),
                               options.gpu_layers_draft)
        devices.add(draft.devices)
    offload = gpu_layers != 0
    for extra in [inputs.projector, *inputs.adapters]:
        if extra is not None:
            extra_weights(extra, placement, devices, offload=offload)
    return Row(options=options, model=main, devices=devices)


def estimate(inputs: ModelInputs, options: Options, step: int | None = None) -> list[Row]:
    """The estimate rows for ``inputs`` under ``options`` (one per ``-ngl`` value of the sweep)."""
    n_layer = read_hparams(inputs.model).n_layer
    return [_row(inputs, options, n) for n in gpu_layer_steps(n_layer, options, step)]
