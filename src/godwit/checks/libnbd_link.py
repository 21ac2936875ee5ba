"""Make Debian's libnbd binding (python3-libnbd) importable from the running Python environment.

There is no libnbd binding on PyPI (the PyPI package ``nbd`` is an unrelated notebook tool).
Debian builds it for its CPython 3.11, whose ABI any CPython 3.11 shares, so linking its two
files into this environment's site-packages is enough. Links rather than copies: an upgrade of
the Debian package is picked up. ``godwit doctor --fix`` and ``make`` both come here
(``python -m godwit.checks.libnbd_link``); a user who installed the wheel with pip gets the same.
"""

from __future__ import annotations

import importlib
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

DIST = Path("/usr/lib/python3/dist-packages")
APT_FIX = "apt-get install python3-libnbd"


@dataclass(frozen=True)
class Binding:
    """Where Debian's binding is and whether this interpreter can use it."""

    module: Path
    extensions: list[Path]  # libnbdmod.<this interpreter's tag>-*.so

    @property
    def usable(self) -> bool:
        return self.module.exists() and bool(self.extensions)


def abi_tag() -> str:
    return f"cpython-{sys.version_info.major}{sys.version_info.minor}"


def debian_binding(dist: Path = DIST) -> Binding:
    return Binding(dist / "nbd.py", sorted(dist.glob(f"libnbdmod.{abi_tag()}-*.so")))


def importable() -> tuple[bool, str]:
    """(True, libnbd version) if ``import nbd`` gives libnbd here, else (False, why not)."""
    importlib.invalidate_caches()
    try:
        import nbd
    except ImportError as exc:
        return False, f"import nbd: {exc}"
    if not hasattr(nbd, "NBD"):
        return False, f"`nbd` is not libnbd's binding ({getattr(nbd, '__file__', '?')}: the PyPI `nbd` package?)"
    try:
        return True, str(nbd.NBD().get_version())
    except Exception as exc:  # an old or broken libnbd.so
        return False, f"libnbd does not start: {exc}"


def why_not_linkable(dist: Path = DIST) -> str | None:
    """None when :func:`link` can work here, else the reason and what to do."""
    b = debian_binding(dist)
    if b.usable:
        return None
    if not b.module.exists():
        return f"python3-libnbd is not installed ({b.module} is missing): {APT_FIX}"
    others = sorted(p.name for p in dist.glob("libnbdmod.*.so"))
    return (f"Debian's binding is built for {', '.join(others) or 'another Python'}, this interpreter is "
            f"{abi_tag()}: run godwit from a venv of the Python that python3-libnbd is built for (python3.11)")


def link(site: Path | None = None, dist: Path = DIST) -> list[Path]:
    """Link the binding's files into ``site`` (default: this environment's site-packages).

    Raises OSError (site-packages not writable) or LookupError (nothing to link: see
    :func:`why_not_linkable`).
    """
    if (reason := why_not_linkable(dist)) is not None:
        raise LookupError(reason)
    b = debian_binding(dist)
    site = site or Path(sysconfig.get_paths()["purelib"])
    made = []
    for src in (b.module, *b.extensions):
        dst = site / src.name
        if dst.is_symlink() and dst.resolve() == src.resolve():
            continue
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        dst.symlink_to(src)
        made.append(dst)
    sys.modules.pop("nbd", None)  # a failed import earlier in this process must not stick
    return made


def main() -> int:
    """For make: link when possible; a missing package is reported, not fatal (doctor says more)."""
    try:
        for p in link():
            print(f"linked {p}", file=sys.stderr)
    except LookupError as exc:
        print(f"libnbd binding: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"libnbd binding: cannot link into site-packages: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
