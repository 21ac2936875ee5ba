"""Running libguestfs work in a child process with a wall-clock limit.

The child gets its own session, so on timeout the whole process group (the appliance's qemu with
it) is killed: no libguestfs call has a timeout of its own, and a hostile filesystem can make the
appliance spin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from godwit.errors import AssessError


def guestfs_env() -> dict[str, str]:
    """The child's environment. Without a backend setting of the user's own, TCG: KVM with
    libguestfs's `-cpu max` aborts on some hosts, and a slower appliance is better than none."""
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    env.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    return env


def run_child(module: str, args: list[str], timeout: float, workdir: Path) -> dict[str, Any]:
    """The JSON result of ``python -m module args``, killed with its appliance after ``timeout``.

    A result with an "error" or "refusal" key is returned as is: the caller words it."""
    env = guestfs_env()
    # The appliance is built once and cached (LIBGUESTFS_CACHEDIR, else TMPDIR, else /var/tmp);
    # the per-run overlay and sockets go to workdir, removed afterwards.
    env.setdefault("LIBGUESTFS_CACHEDIR", os.environ.get("TMPDIR") or "/var/tmp")
    env["TMPDIR"] = str(workdir)
    with subprocess.Popen([sys.executable, "-m", module, *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssessError(f"libguestfs's appliance did not finish in {timeout:.0f} s (a damaged or hostile "
                              f"filesystem can make the appliance spin); it was stopped",
                              hint="check the source disk with fsck; raise --timeout for very large disks") from None
    try:
        facts: dict[str, Any] = json.loads(out)
    except ValueError:
        tail = err.strip().splitlines()[-1:] or ["no output"]
        if "No module named 'guestfs'" in err:
            raise AssessError("libguestfs's Python binding is not importable here",
                              hint="apt-get install python3-guestfs libguestfs-tools linux-image-amd64, "
                                   "then `python -m godwit.checks.libnbd_link`") from None
        raise AssessError(f"libguestfs's appliance failed: {tail[0]}",
                          hint="run `libguestfs-test-tool` to check libguestfs on this host") from None
    return facts
