"""Neutral helpers every layer may use: durable file operations (:mod:`.fsutil`) and ``flock`` locks
(:mod:`.locking`). They import nothing of ggufpack but :mod:`ggufpack.errors`."""
