"""Running qemu-img, and QEMU ``--image-opts`` strings that always name the format.

Every qemu invocation godwit makes passes the format it recorded when the disk was added
(``-f FMT`` or ``driver=FMT``); qemu never probes a guest-writable image again.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

QEMU_IMG_TIMEOUT = 120.0


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def image_opts(path: Path, fmt: str, *, export: bool = False) -> str:
    """QEMU --image-opts for ``path``; ``export`` makes it read-only and lock-free."""
    # In QEMU option strings a comma is written twice.
    opts = f"driver={fmt},file.driver=file,file.filename={str(path.absolute()).replace(',', ',,')}"
    if export:
        opts += ",read-only=on,force-share=on,file.locking=off"
    return opts


def qemu_img(*args: str) -> tuple[int, str, str]:
    """Run qemu-img; returns (returncode, stdout, stderr). Never raises."""
    try:
        proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                              timeout=QEMU_IMG_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, "", "qemu-img is not installed"
    except subprocess.TimeoutExpired:
        return 124, "", f"qemu-img {args[0]} timed out"
    return proc.returncode, proc.stdout, proc.stderr
