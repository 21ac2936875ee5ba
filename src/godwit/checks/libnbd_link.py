"""Make Debian's libnbd and libguestfs bindings importable from the running Python environment.

There is no libnbd binding on PyPI (the PyPI package ``nbd`` is an unrelated notebook tool), and
libguestfs's binding on PyPI is an unmaintained source tarball. Debian builds both (python3-libnbd,
python3-guestfs) for its CPython 3.11, whose ABI any CPython 3.11 shares, so linking each one's
two files into this environment's site-packages is enough. Links rather than copies: an upgrade of
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


@dataclass(frozen=True)
class Spec:
    """One Debian binding: its module, the prefix of its extension, its package, what proves it."""

    module: str
    extension: str
    package: str
    required: bool  # False: only `godwit assess` needs it; its absence is reported, not an error


NBD = Spec("nbd", "libnbdmod", "python3-libnbd", True)
GUESTFS = Spec("guestfs", "libguestfsmod", "python3-guestfs", False)
SPECS = (NBD, GUESTFS)
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


def debian_binding(dist: Path = DIST, spec: Spec = NBD) -> Binding:
    return Binding(dist / f"{spec.module}.py", sorted(dist.glob(f"{spec.extension}.{abi_tag()}-*.so")))


def importable(spec: Spec = NBD) -> tuple[bool, str]:
    """(True, library version) if ``import <module>`` gives Debian's binding here, else (False, why not)."""
    importlib.invalidate_caches()
    if spec is GUESTFS:
        try:
            import guestfs
        except ImportError as exc:
            return False, f"import guestfs: {exc}"
        v = guestfs.GuestFS(python_return_dict=True).version()
        return True, f"{v['major']}.{v['minor']}.{v['release']}"
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


def why_not_linkable(dist: Path = DIST, spec: Spec = NBD) -> str | None:
    """None when :func:`link` can work here, else the reason and what to do."""
    b = debian_binding(dist, spec)
    if b.usable:
        return None
    if not b.module.exists():
        return f"{spec.package} is not installed ({b.module} is missing): apt-get install {spec.package}"
    others = sorted(p.name for p in dist.glob(f"{spec.extension}.*.so"))
    return (f"Debian's binding is built for {', '.join(others) or 'another Python'}, this interpreter is "
            f"{abi_tag()}: run godwit from a venv of the Python that {spec.package} is built for (python3.11)")


def link(site: Path | None = None, dist: Path = DIST, spec: Spec = NBD) -> list[Path]:
    """Link the binding's files into ``site`` (default: this environment's site-packages).

    Raises OSError (site-packages not writable) or LookupError (nothing to link: see
    :func:`why_not_linkable`).
    """
    if (reason := why_not_linkable(dist, spec)) is not None:
        raise LookupError(reason)
    b = debian_binding(dist, spec)
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
    sys.modules.pop(spec.module, None)  # a failed import earlier in this process must not stick
    return made


def main() -> int:
    """For make: link what is there; a missing package is reported, not fatal (doctor says more)."""
    for spec in SPECS:
        try:
            for p in link(spec=spec):
                print(f"linked {p}", file=sys.stderr)
        except LookupError as exc:
            if spec.required or (DIST / f"{spec.module}.py").exists():
                print(f"{spec.module} binding: {exc}", file=sys.stderr)
        except OSError as exc:
            print(f"{spec.module} binding: cannot link into site-packages: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
