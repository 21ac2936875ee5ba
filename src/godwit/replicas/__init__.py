"""Replica disks: one interface (:class:`ReplicaDisk`), a sparse local file by default and an
Azure page blob in the cloud."""

from godwit.replicas.base import PointReader, ReplicaDisk

__all__ = ["PointReader", "ReplicaDisk"]
