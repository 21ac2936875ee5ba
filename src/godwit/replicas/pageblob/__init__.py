"""Replica disks in Azure page blobs: the replica (``replica``), its write-behind queue
(``queue``), page requests (``pages``), recovery points (``points``) and migration's copy of a
point to a new blob (``copy``)."""

from godwit.replicas.pageblob.copy import copy_point_to_blob
from godwit.replicas.pageblob.replica import (
    REPLICA_CONCURRENCY,
    REPLICA_KEYS,
    PageBlobReplica,
    open_pageblob_replica,
)

__all__ = ["REPLICA_CONCURRENCY", "REPLICA_KEYS", "PageBlobReplica", "copy_point_to_blob", "open_pageblob_replica"]
