"""godwit: continuous block replication of servers' disks into a cache store, replica disks,
recovery points and migration."""

__version__ = "0.1.0"
__all__ = ["__version__"]
