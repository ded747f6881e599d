"""llama.cpp memory estimation from GGUF headers alone: ``ggufpack estimate``.

:func:`estimate` takes the headers (:mod:`.inputs`), the settings (:mod:`.params`) and returns one
:class:`Row` per ``-ngl`` value; the per-component rules live in :mod:`.model`, the output in
:mod:`.render`.
"""

from __future__ import annotations

from ggufpack.estimate.inputs import ModelInputs
from ggufpack.estimate.params import Options, options_from_cmd, resolve
from ggufpack.estimate.rows import Row, estimate, gpu_layer_steps

__all__ = ["ModelInputs", "Options", "Row", "estimate", "gpu_layer_steps", "options_from_cmd", "resolve"]
