"""Neutral helpers every layer may use: durable file operations (:mod:`.fsutil`), ``flock`` locks
(:mod:`.locking`) and code fingerprints (:mod:`.fingerprint`). They import nothing of ggufpack but
:mod:`ggufpack.errors`."""
