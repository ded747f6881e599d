"""OCI building blocks: media types, deterministic tar layers, safe extraction, config and manifest.

Modules: :mod:`.mediatypes` (constants), :mod:`.descriptor` (descriptors, canonical JSON),
:mod:`.tarlayer` (writing layers), :mod:`.extract` (reading and applying layers),
:mod:`.image` (config, history and manifest bodies).
"""
