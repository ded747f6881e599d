"""Options as data: each CONVERT/QUANTIZE option declared once (``declare``, ``convert``, ``quantize``) and the
tables they are checked against; no native library, no numpy.

The Packerfile, the CLI, the library and the numpy fallback read the same declarations, so a value is
refused by the same check everywhere, and at plan time. Whether a Packerfile is valid must never
depend on a loadable llama.cpp: the names of its quantization and tensor types live here as data, and a
test keeps them equal to what the installed llama.cpp offers (``tests/test_quantize_types.py``).
"""
