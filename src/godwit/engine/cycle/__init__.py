"""Replication cycles: ``runner`` (the states of a cycle), ``changes`` (what to read: the tracker's
regions cut to blocks, base digests, the resume journal), ``pipeline`` (read, hash, compress),
``packer`` (packs put and journaled), ``commit`` (hashes, manifest, state) and ``stats``."""

from godwit.engine.cycle.runner import CycleRunner, run_cycle
from godwit.engine.cycle.stats import CycleResult, ProgressFn, bottleneck

__all__ = ["CycleResult", "CycleRunner", "ProgressFn", "bottleneck", "run_cycle"]
