"""The version of ggufpack, importable from every layer."""

__version__ = "0.1.0"
