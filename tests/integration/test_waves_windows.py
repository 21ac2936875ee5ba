"""Windows that prove they were kept: a real initial cycle under a schedule in Europe/Berlin with
a fake clock injected into the scheduler (time is the only thing faked: it runs 20 times faster,
and the throttle sleeps accordingly). The enforcement log shows each cap window's measured rate
within 10% of its cap and zero bytes in the blackout between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.project.project import init, open_project

pytestmark = pytest.mark.slow

SPEED = 20.0
CONFIG = """
[replication.throttle]
zone = "Europe/Berlin"
schedule = { "08:00-08:01" = 1, "08:02-08:03" = 2 }
blackout = ["08:01-08:02"]
"""


class FastClock:
    """Wall time that starts at ``start`` and runs ``SPEED`` times faster than the real clock."""

    def __init__(self, start: float) -> None:
        self.start, self.m0 = start, time.monotonic()

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self.m0) * SPEED

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds / SPEED)


def test_windows_are_logged_with_their_measured_rates(tmp_path: Path) -> None:
    init(tmp_path / "proj").close()
    cfg = tmp_path / "proj" / "godwit.toml"
    text = cfg.read_text().replace("[replication.throttle]\n", "").replace("pack_size_mib = 32", "pack_size_mib = 1")
    cfg.write_text(text + CONFIG)
    disk = tmp_path / "d.raw"
    disk.write_bytes(os.urandom(24 << 20))  # more than the windows let through (7.5 + 15 MB)
    p = open_project(tmp_path / "proj")
    clock = FastClock(datetime(2026, 6, 10, 8, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp())
    p.clock, p.sleep = clock, clock.sleep
    try:
        add_server(p, "s", [str(disk)])
        res = replication.start(p, "s")
        assert res is not None and res.t_throttle > 0
        assert clock() > datetime(2026, 6, 10, 8, 3, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    finally:
        p.close()
    out = subprocess.run([sys.executable, "-m", "godwit", "replicate", "windows", "--json", "--project",
                          str(tmp_path / "proj")], capture_output=True, text=True, check=True).stdout
    rows = {r["window"]: r for r in json.loads(out)}
    assert set(rows) == {"08:00-08:01", "08:01-08:02", "08:02-08:03"}, rows
    for label, cap in (("08:00-08:01", 1.0), ("08:02-08:03", 2.0)):
        r = rows[label]
        assert r["kind"] == "cap" and r["cap_mbps"] == cap and r["kept"], r
        assert abs(r["avg_mbps"] - cap) <= 0.10 * cap, r
        assert r["busy_seconds"] > 40  # busy for most of the fake minute
    black = rows["08:01-08:02"]
    assert black["kind"] == "blackout" and black["bytes"] == 0 and black["kept"]
    human = subprocess.run([sys.executable, "-m", "godwit", "replicate", "windows", "--project",
                            str(tmp_path / "proj")], capture_output=True, text=True, check=True).stdout
    assert "08:01-08:02 blackout: 0 bytes sent" in human and "08:00-08:01 cap 1 Mbps: measured" in human
