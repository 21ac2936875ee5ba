"""Make Debian's libnbd binding (python3-libnbd) importable from this venv.

There is no libnbd binding on PyPI; Debian builds it for CPython 3.11, whose ABI our
interpreter shares. We link the two files into site-packages rather than copying them, so an
upgrade of the Debian package is picked up.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

DIST = Path("/usr/lib/python3/dist-packages")


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    files = [DIST / "nbd.py", *sorted(DIST.glob(f"libnbdmod.{tag}-*.so"))]
    if not files[0].exists() or len(files) < 2:
        print("python3-libnbd not found: NBD sources will be unavailable "
              "(apt-get install python3-libnbd)", file=sys.stderr)
        return 0
    for f in files:
        dst = site / f.name
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        dst.symlink_to(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
