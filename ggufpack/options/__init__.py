"""Pure-data option tables the Packerfile layer checks against: no native library, no numpy.

Whether a Packerfile is valid must never depend on a loadable llama.cpp: the names of its
quantization and tensor types live here as data, and a test keeps them equal to what the installed
llama.cpp offers (``tests/test_quantize_types.py``).
"""
