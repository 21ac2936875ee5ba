"""The host's tools: qemu-img, qemu-nbd, qemu-storage-daemon and the libnbd and libguestfs bindings."""

from __future__ import annotations

import re
import subprocess

from godwit.checks import libnbd_link, sysdeps
from godwit.checks.finding import Finding, failed, passed, warned

#: qemu-storage-daemon arrived in QEMU 5.0; the NBD and snapshot options godwit passes are older.
MIN_QEMU = (5, 0)
VERSION_RE = re.compile(r"(\d+)\.(\d+)")  # the first x.y: "qemu-img version 7.2.1 (Debian …)"

#: (tool, why godwit needs it, failure severity when absent)
QEMU_TOOLS = (
    ("qemu-img", "qcow2 snapshots, qcow2 exports and format probing", "fail"),
    ("qemu-nbd", "reading qcow2, VMDK, VHD and VHDX disks", "fail"),
    ("qemu-storage-daemon", "the dirty-bitmap change tracker (scan works without it)", "warn"),
)


def apt_fix(probe: str, fallback: str) -> str:
    pkg = sysdeps.package_for(probe)
    return f"apt-get install {pkg.name if pkg else fallback}"


def qemu_version(path: str) -> tuple[str, tuple[int, int] | None]:
    """The first line of ``TOOL --version`` and its (major, minor)."""
    try:
        run = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"does not run: {exc}", None
    first = (run.stdout or run.stderr).strip().splitlines()
    line = first[0] if first else f"exit {run.returncode}, no output"
    line = line.removeprefix(path).lstrip()  # qemu-nbd prints its own path first
    m = VERSION_RE.search(line)
    return line, (int(m.group(1)), int(m.group(2))) if m else None


def check_qemu() -> list[Finding]:
    out = []
    for tool, why, severity in QEMU_TOOLS:
        name = f"tool: {tool}"
        fix = apt_fix(f"cmd:{tool}", "qemu-utils")
        path = sysdeps.which(tool)
        if path is None:
            detail = f"{tool} is not on PATH: needed for {why}"
            out.append(failed(name, detail, fix) if severity == "fail" else warned(name, detail, fix))
            continue
        line, version = qemu_version(path)
        if version is None:
            out.append(failed(name, f"{path}: cannot read its version ({line})", fix))
        elif version < MIN_QEMU:
            out.append(warned(name, f"{path}: {line}; godwit is tested with QEMU {MIN_QEMU[0]}.{MIN_QEMU[1]} "
                              "or newer", f"upgrade QEMU ({fix})"))
        else:
            out.append(passed(name, f"{path}: {line}"))
    return out


def check_libnbd() -> Finding:
    name = "python: libnbd binding"
    ok, detail = libnbd_link.importable()
    if ok:
        return passed(name, f"import nbd works here (libnbd {detail})")
    reason = libnbd_link.why_not_linkable()
    if reason is None:
        fix = "run `godwit doctor --fix` (links Debian's python3-libnbd into this environment)"
    else:
        fix = reason
    return failed(name, f"{detail}: qcow2, VMDK, VHD and VHDX disks cannot be read", fix)


def check_guestfs() -> Finding:
    """libguestfs serves only `godwit assess` and `prepare`: missing is a warning, not a failure."""
    name = "python: libguestfs binding"
    ok, detail = libnbd_link.importable(libnbd_link.GUESTFS)
    if ok:
        return passed(name, f"import guestfs works here ({detail})")
    reason = libnbd_link.why_not_linkable(spec=libnbd_link.GUESTFS)
    fix = reason or "run `godwit doctor --fix` (links Debian's python3-guestfs into this environment)"
    return warned(name, f"{detail}: `godwit assess` and `godwit prepare` are unavailable", fix)
