"""qcow2 internal snapshots: the point-in-time view of a qcow2 image that no one else writes.

A snapshot is named ``godwit-<temp tag>-<random>`` (the tag says which server, disk and cycle made
it), exported by qemu-nbd (``--load-snapshot``) and deleted on close. A snapshot left by a killed
godwit is reported, not deleted: another godwit may be reading it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path

from godwit.sources.qemu_img import image_opts, last_line, qemu_img
from godwit.sources.temp_names import temp_name

SNAPSHOT_PREFIX = "godwit-"


def stale_snapshot_warnings(path: Path) -> list[str]:
    """Warnings for godwit snapshots already in the image (left by a killed godwit)."""
    warnings: list[str] = []
    rc, out, _ = qemu_img("info", "--output=json", "-U", "-f", "qcow2", str(path))
    if rc != 0:
        return warnings
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        for snap in json.loads(out).get("snapshots", []):
            name = str(snap.get("name", ""))
            if name.startswith(SNAPSHOT_PREFIX):
                warnings.append(f"{path} holds internal snapshot {name}, probably left by a godwit that "
                                "was killed; it keeps old data alive. Delete it with "
                                f"`qemu-img snapshot -d {name} {path}` if no godwit is running")
    return warnings


def create_snapshot(path: Path, tag: str | None, warnings: list[str]) -> tuple[str | None, str]:
    """Create an internal snapshot; returns (name, "") or (None, why not)."""
    warnings.extend(stale_snapshot_warnings(path))
    name = f"{SNAPSHOT_PREFIX}{temp_name(tag)}-{secrets.token_hex(4)}"
    rc, _, err = qemu_img("snapshot", "-q", "--image-opts", "-c", name, image_opts(path, "qcow2"))
    if rc == 0:
        return name, ""
    # qemu says 'Failed to get "write" lock' and, on the last line, 'Is another process using ...'
    if '"write" lock' in err or "another process" in err:
        return None, "the image is in use by another process"
    return None, last_line(err) or f"qemu-img snapshot exited with {rc}"


def delete_snapshot(path: Path, name: str) -> str | None:
    """Delete snapshot ``name``; returns a warning for people when it could not be."""
    rc, _, err = qemu_img("snapshot", "-q", "--image-opts", "-d", name, image_opts(path, "qcow2"))
    if rc == 0:
        return None
    return (f"{path}: could not delete internal snapshot {name} ({last_line(err)}); "
            f"delete it with `qemu-img snapshot -d {name} {path}` when the image is not in use")
