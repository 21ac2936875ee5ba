"""A cycle's consistency from its disks' sources: the weakest of them, and a sentence saying how.

Values (``format.manifest.CONSISTENCY``, weakest first): ``none`` (read live), ``crash`` (a
point-in-time view, like a power cut), ``fs`` (a point-in-time view taken while the guest's agent
held its filesystems frozen: filesystem-consistent). A source says its own value once its view
exists, so this is asked after the disks were read.

Disks frozen together (the live disks of one QEMU, in one QMP transaction) share an ``instant``;
disks frozen one after the other are named in the detail, so nobody takes the recovery point for
one instant across them.
"""

from __future__ import annotations

from collections.abc import Sequence

from godwit.format.manifest import CONSISTENCY
from godwit.sources.base import DiskSource

WORDS = {"none": "not point-in-time", "crash": "crash-consistent", "fs": "filesystem-consistent"}


def _rank(value: str) -> int:
    return CONSISTENCY.index(value) if value in CONSISTENCY else 0


def of_source(s: DiskSource) -> tuple[str, str]:
    """(value, how) of one source: how is e.g. ``fleecing`` or ``guest agent freeze, fleecing``."""
    how = getattr(s, "view", "") or ("snapshot" if s.consistency == "crash" else "read live")
    return (s.consistency if s.consistency in CONSISTENCY else "none"), how


def combine(sources: Sequence[DiskSource]) -> tuple[str, str]:
    """(value, detail) of a cycle: the weakest disk's value, and e.g. ``crash-consistent (fleecing)``."""
    if not sources:
        return "crash", WORDS["crash"]
    per = [of_source(s) for s in sources]
    value = min((v for v, _ in per), key=_rank)
    hows = sorted({h for v, h in per if v == value})
    detail = f"{WORDS[value]} ({'; '.join(hows)})"
    stronger = [i for i, (v, _) in enumerate(per) if v != value]
    if stronger:
        detail += f"; disk(s) {', '.join(map(str, stronger))} better ({', '.join(per[i][1] for i in stronger)})"
    instants: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        instants.setdefault(getattr(s, "instant", "") or f"disk{i}", []).append(i)
    if value != "none" and len(sources) > 1:
        groups = list(instants.values())
        if len(groups) == 1 and str(getattr(sources[0], "instant", "")):
            detail += "; all disks at one instant (one transaction)"
        elif len(groups) > 1:
            parts = ["+".join(map(str, g)) for g in groups]
            detail += f"; disks {' | '.join(parts)} frozen one group after the other, not at one instant"
    return value, detail
