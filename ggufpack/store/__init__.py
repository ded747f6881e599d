"""The local store: OCI image layout, runnable files, refs, leases and garbage collection."""

from ggufpack.store.gc import PruneResult
from ggufpack.store.index import ImageRecord, now_rfc3339
from ggufpack.store.ingest import IngestWriter
from ggufpack.store.layout import default_root
from ggufpack.store.store import Store

__all__ = ["ImageRecord", "IngestWriter", "PruneResult", "Store", "default_root", "now_rfc3339"]
