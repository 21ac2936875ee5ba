"""Pure helpers over a cycle's block digests: which runs differ from the base, a range without its
cuts, and the journaled digests that fall inside a task (the pipeline's bookkeeping, kept apart
from its threads)."""

from __future__ import annotations

from collections.abc import Iterator

from godwit.engine.cycle.work import DIGEST

#: (first block, digests) of journaled blocks inside one task.
Journaled = list[tuple[int, bytes]]


def journaled(pieces: list[tuple[int, bytes]], at: int, first: int, end: int) -> tuple[Journaled, int]:
    """The journaled digests inside blocks [first, end), from the sorted, disjoint ``pieces``
    starting at index ``at`` (tasks come in disk order); returns them and the next ``at``."""
    while at < len(pieces) and pieces[at][0] + len(pieces[at][1]) // DIGEST <= first:
        at += 1
    out: Journaled = []
    i = at
    while i < len(pieces) and pieces[i][0] < end:
        f, d = pieces[i]
        a, b = max(f, first), min(f + len(d) // DIGEST, end)
        out.append((a, d[(a - f) * DIGEST:(b - f) * DIGEST]))
        i += 1
    return out, at


def differs(digests: bytes, base: bytes, a: int, b: int) -> Iterator[tuple[int, int]]:
    """Runs inside [a, b) where the two digest arrays differ."""
    if digests[a * DIGEST:b * DIGEST] == base[a * DIGEST:b * DIGEST]:
        return
    start = -1
    for i in range(a, b):
        same = digests[i * DIGEST:(i + 1) * DIGEST] == base[i * DIGEST:(i + 1) * DIGEST]
        if not same and start < 0:
            start = i
        elif same and start >= 0:
            yield start, i
            start = -1
    if start >= 0:
        yield start, b


def subtract(a: int, b: int, cuts: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """[a, b) without the sorted, disjoint ``cuts``."""
    pos = a
    for x, y in cuts:
        if y <= pos or x >= b:
            continue
        if x > pos:
            yield pos, x
        pos = max(pos, y)
    if pos < b:
        yield pos, b
