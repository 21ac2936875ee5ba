"""Names of the temporaries a source makes (reflink clones, qcow2 snapshots, sockets).

The engine tags each open with ``<server uid>-d<disk index>-c<cycle>``, so no two disks or cycles
ever share a temporary, whatever their files are called. Without a tag the name is still unique
(pid and random), never derived from the disk's file name.
"""

from __future__ import annotations

import os
import re
import secrets

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def temp_name(tag: str | None) -> str:
    """A file-name-safe, bounded name for one open's temporaries."""
    if tag is None:
        return f"anon-{os.getpid()}-{secrets.token_hex(6)}"
    safe = _UNSAFE.sub("_", tag)[:80].lstrip(".")
    return safe or f"anon-{os.getpid()}-{secrets.token_hex(6)}"
