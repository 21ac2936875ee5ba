"""Naming a live QEMU disk: its ``qemu+unix://`` spec, parsed and written back, the names of its
fleecing objects, and the probe ``server add`` makes (size, node). Reading one is ``sources.live``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from godwit.errors import SourceError, UsageError
from godwit.sources.qga import DEFAULT_TIMEOUT as DEFAULT_QGA_TIMEOUT
from godwit.sources.qmp import QmpSession

SCHEME = "qemu+unix"
FORMAT = "qemu-live"  # the format recorded for such a disk
FLEECE_PREFIX = "godwit-f-"
MIN_FREE_MIB = 256
QGA_TIMEOUT = DEFAULT_QGA_TIMEOUT


@dataclass(frozen=True)
class LiveSpec:
    qmp: Path
    node: str
    nbd: Path | None = None
    fleece_dir: Path | None = None
    min_free_mib: int = MIN_FREE_MIB
    qga: Path | None = None
    qga_timeout: float = QGA_TIMEOUT

    @classmethod
    def parse(cls, spec: str) -> LiveSpec:
        """Parse a ``qemu+unix://`` spec; also the form ``Path()`` leaves (``qemu+unix:/...``)."""
        parts = urlsplit(spec)
        if parts.scheme != SCHEME or not parts.path.startswith("/") or parts.netloc:
            raise UsageError(f"disk {spec!r} is not a live QEMU disk spec",
                             hint="write qemu+unix:///path/to/qmp.sock?node=NODE")
        q = {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=False).items()}
        unknown = set(q) - {"node", "nbd", "fleece_dir", "min_free_mib", "qga", "qga_timeout"}
        if "node" not in q or unknown:
            raise UsageError(f"disk {spec!r}: " + (f"unknown parameter {sorted(unknown)[0]!r}" if unknown
                                                   else "no node= given"),
                             hint="write qemu+unix:///path/to/qmp.sock?node=NODE[&nbd=SOCK][&fleece_dir=DIR]"
                                  "[&min_free_mib=N][&qga=SOCK][&qga_timeout=S]")
        free = q.get("min_free_mib", str(MIN_FREE_MIB))
        if not free.isdigit():
            raise UsageError(f"disk {spec!r}: min_free_mib must be a number of MiB")
        wait = q.get("qga_timeout", str(QGA_TIMEOUT))
        try:
            timeout = float(wait)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= 600 or ("qga_timeout" in q and "qga" not in q):
            raise UsageError(f"disk {spec!r}: qga_timeout must be seconds (0 < S <= 600), with qga= given",
                             hint="write &qga=/path/to/qga.sock&qga_timeout=10")
        if "qga" in q and not q["qga"].startswith("/"):
            raise UsageError(f"disk {spec!r}: qga must be the absolute path of the guest agent's socket")
        return cls(Path(parts.path), q["node"], Path(q["nbd"]) if "nbd" in q else None,
                   Path(q["fleece_dir"]) if "fleece_dir" in q else None, int(free),
                   Path(q["qga"]) if "qga" in q else None, timeout)

    def __str__(self) -> str:
        extra = "".join(f"&{k}={v}" for k, v in (("nbd", self.nbd), ("fleece_dir", self.fleece_dir)) if v)
        if self.min_free_mib != MIN_FREE_MIB:
            extra += f"&min_free_mib={self.min_free_mib}"
        if self.qga is not None:
            extra += f"&qga={self.qga}"
            if self.qga_timeout != QGA_TIMEOUT:
                extra += f"&qga_timeout={self.qga_timeout:g}"
        return f"{SCHEME}://{self.qmp}?node={self.node}{extra}"


def is_live_spec(spec: str) -> bool:
    return spec.startswith(SCHEME + ":")


def fleece_name(key: str) -> str:
    """The node/export/job name of a disk's fleecing objects (QEMU node names are < 32 bytes)."""
    return FLEECE_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:16]


def probe_live(spec: str) -> tuple[str, int]:
    """(normalized spec, virtual size) of a live disk, for ``server add``."""
    ls = LiveSpec.parse(spec)
    with QmpSession(ls.qmp) as q:
        node = q.nodes().get(ls.node)
        if node is None:
            raise SourceError(f"QEMU at {ls.qmp} has no block node {ls.node!r}",
                              hint="list them with the QMP command query-named-block-nodes")
        return str(ls), int(node["image"]["virtual-size"])
