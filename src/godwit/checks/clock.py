"""The clock: cycle times, RPO, schedules and Azure SAS/token lifetimes all read it.

Doctor makes no network calls, so no time server is asked. What is checked, and said so: the wall
clock is within sane bounds and not behind this godwit's own files; it advances in step with the
monotonic clock; and the kernel's NTP state (``adjtimex``) says whether something keeps it
synchronised. Against real time sources: a PostgreSQL state server's clock (state_revision.py),
and ``godwit store check`` compares with an Azure account's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import time
from datetime import UTC, datetime
from pathlib import Path

from godwit.checks.finding import Finding, failed, passed, warned

EARLIEST = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
LATEST = datetime(2100, 1, 1, tzinfo=UTC).timestamp()
STEP_TOLERANCE = 0.05  # seconds the wall clock may drift from monotonic over the sample
SAMPLE = 0.1
TIME_ERROR = 5  # adjtimex: clock not synchronised
STA_UNSYNC = 0x0040
TIMEX_MAXERROR, TIMEX_STATUS = 24, 40  # offsets in struct timex (64-bit Linux)
SYNC_FIX = "enable time synchronisation (systemd-timesyncd or chrony); on Azure VMs, chrony with the host's PTP clock"


def kernel_sync() -> tuple[bool, float] | None:
    """(synchronised, max error in seconds) from adjtimex(2) in read-only mode; None if unavailable."""
    if struct.calcsize("P") != 8:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    buf = ctypes.create_string_buffer(512)  # modes = 0: only read; larger than any struct timex
    state = adjtimex(buf)
    if state < 0:
        return None
    (maxerror,) = struct.unpack_from("q", buf, TIMEX_MAXERROR)
    (status,) = struct.unpack_from("i", buf, TIMEX_STATUS)
    synced = state != TIME_ERROR and not status & STA_UNSYNC
    return synced, maxerror / 1e6


def check_clock() -> list[Finding]:
    name = "clock"
    now = time.time()
    built = Path(__file__).stat().st_mtime
    when = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if not EARLIEST <= now < LATEST:
        return [failed(f"{name}: wall clock", f"the clock says {when}", "set the date; " + SYNC_FIX)]
    if now < built - 300:
        return [failed(f"{name}: wall clock", f"the clock says {when}, before this godwit's files were written "
                       f"({datetime.fromtimestamp(built, UTC):%Y-%m-%d %H:%M} UTC)", "set the date; " + SYNC_FIX)]
    out = [passed(f"{name}: wall clock", f"{when}, within 2024–2100 and not before this godwit's own files")]

    w0, m0 = time.time(), time.monotonic()
    time.sleep(SAMPLE)
    drift = (time.time() - w0) - (time.monotonic() - m0)
    if abs(drift) > STEP_TOLERANCE:
        out.append(warned(f"{name}: steady", f"the wall clock moved {drift:+.3f} s against the monotonic clock "
                          f"in {SAMPLE:.1f} s: something is stepping it", "let one time service (chrony or "
                          "systemd-timesyncd) adjust the clock, slewing rather than stepping"))
    else:
        out.append(passed(f"{name}: steady", f"wall and monotonic clocks agree over {SAMPLE:.1f} s "
                          f"({drift * 1000:+.1f} ms)"))

    sync = kernel_sync()
    if sync is None:
        out.append(warned(f"{name}: synchronised", "cannot read the kernel's NTP state (adjtimex)", SYNC_FIX))
    elif sync[0]:
        out.append(passed(f"{name}: synchronised", f"the kernel reports an NTP-synchronised clock "
                          f"(max error {sync[1] * 1000:.0f} ms)"))
    else:
        out.append(warned(f"{name}: synchronised", "the kernel reports the clock as not synchronised (no NTP "
                          "service has set it; doctor asks no time server): RPO and schedules may be off, and "
                          "Azure refuses requests when the skew passes ~15 min", SYNC_FIX))
    return out
