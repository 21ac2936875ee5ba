"""The system packages godwit needs: which are missing, and installing them.

The list is ``system_packages.txt`` beside this file: one list for the Makefile, .ci/run and
``godwit doctor``. Each package names a probe that shows it is present (a command on PATH, a
file, a shared library, a Python module), so a machine that has everything never runs apt at
all, and a tool installed some other way (nodejs from nodesource, say) counts as present.

Standard library only, and no godwit imports: ``make`` runs this file with the system's
``python3`` before the venv exists (``python3 src/godwit/checks/sysdeps.py ensure setup run``).
"""

from __future__ import annotations

import argparse
import ctypes.util
import glob
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LIST = Path(__file__).with_name("system_packages.txt")
GROUPS = ("setup", "run", "demo", "test")
#: Tools in sbin are not on an ordinary user's PATH, but are present all the same.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


@dataclass(frozen=True)
class Package:
    name: str
    group: str
    probe: str  # kind:argument, e.g. cmd:qemu-img
    why: str

    def present(self) -> bool:
        kind, _, arg = self.probe.partition(":")
        if kind == "cmd":
            return which(arg) is not None
        if kind == "file":
            return Path(arg).exists()
        if kind == "glob":
            return bool(glob.glob(arg))
        if kind == "lib":
            return ctypes.util.find_library(arg) is not None
        if kind == "py":
            return importlib.util.find_spec(arg) is not None
        raise ValueError(f"{LIST.name}: unknown probe {self.probe!r} for {self.name}")


def which(cmd: str) -> str | None:
    """The command's path, looking in sbin too."""
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(cmd, path=os.pathsep.join([path, *SBIN]))


def packages(groups: tuple[str, ...] | list[str] = GROUPS, path: Path = LIST) -> list[Package]:
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(maxsplit=3)
        if len(fields) < 3 or fields[1] not in GROUPS:
            raise ValueError(f"{path}:{lineno}: expected 'package group probe [why]', got {line!r}")
        pkg = Package(fields[0], fields[1], fields[2], fields[3] if len(fields) > 3 else "")
        if pkg.group in groups:
            out.append(pkg)
    return out


def package_for(probe: str) -> Package | None:
    """The package whose probe is ``probe`` (e.g. ``cmd:qemu-img``), for naming fixes."""
    return next((p for p in packages() if p.probe == probe), None)


def missing(groups: tuple[str, ...] | list[str] = GROUPS, path: Path = LIST) -> list[Package]:
    return [p for p in packages(groups, path) if not p.present()]


def is_debian() -> bool:
    return Path("/etc/debian_version").exists() and which("apt-get") is not None


def install_command(names: list[str], *, root: bool) -> str:
    """The one command line that installs ``names`` on Debian/Ubuntu."""
    pkgs = " ".join(shlex.quote(n) for n in names)
    sudo = "" if root else "sudo "
    return f"{sudo}apt-get update && {sudo}apt-get install -y --no-install-recommends {pkgs}"


def ensure(groups: list[str], path: Path = LIST) -> int:
    """Install what is missing (root on Debian), else print the command that would. 0: all there."""
    absent = missing(groups, path)
    if not absent:
        return 0
    names = [p.name for p in absent]
    for p in absent:
        print(f"sysdeps: missing {p.name} ({p.why})", file=sys.stderr)
    if not is_debian():
        print(f"sysdeps: not a Debian/Ubuntu machine: install the equivalents of {' '.join(names)} "
              "(Debian's names), then run make again", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("sysdeps: run this, then make again:\n  " + install_command(names, root=False), file=sys.stderr)
        return 1
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"sysdeps: apt-get install {' '.join(names)}", file=sys.stderr)
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *names]):
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            print(f"sysdeps: `{shlex.join(cmd)}` failed", file=sys.stderr)
            return 1
    still = [p.name for p in missing(groups, path)]
    if still:
        print(f"sysdeps: installed, yet still missing: {' '.join(still)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sysdeps", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--list", type=Path, default=LIST, help=f"the package list (default: {LIST.name})")
    sub = ap.add_subparsers(dest="action", required=True)
    for action, help_ in (("ensure", "install what is missing (as root on Debian), or say how"),
                          ("missing", "print the missing packages, one a line (exit 1 if any)"),
                          ("list", "print the packages of the groups")):
        sp = sub.add_parser(action, help=help_)
        sp.add_argument("groups", nargs="*", metavar="GROUP", help=f"any of {', '.join(GROUPS)} (default: all)")
    args = ap.parse_args(argv)
    groups = args.groups or list(GROUPS)
    if bad := [g for g in groups if g not in GROUPS]:
        ap.error(f"unknown group(s) {' '.join(bad)}: use {', '.join(GROUPS)}")
    try:
        packages(groups, args.list)
    except (OSError, ValueError) as exc:
        ap.error(str(exc))
    if args.action == "ensure":
        return ensure(groups, args.list)
    if args.action == "missing":
        absent = missing(groups, args.list)
        for p in absent:
            print(p.name)
        return 1 if absent else 0
    for p in packages(groups, args.list):
        print(p.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
