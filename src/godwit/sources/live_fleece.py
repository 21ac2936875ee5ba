"""Fleecing objects in QEMU and on disk: removing what a cycle left, making overlay files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from godwit.errors import SourceError
from godwit.sources.qmp import QmpSession

TEMPLATE_PREFIX = "godwit-empty-"  # not a leftover: kept for the next cycle


def cleanup_leftovers(q: QmpSession, name: str, overlay: Path | None, *, quiet: bool = False,
                      nodes: dict[str, Any] | None = None) -> list[str]:
    """Remove the export, job and node called ``name`` (and the overlay file); returns warnings.

    Export and job both hold the node: without the node (``nodes``, if given, is a fresh
    query-named-block-nodes) neither can exist, so the common case costs one query.
    """
    found: list[str] = []
    if name in (nodes if nodes is not None else q.nodes()):
        export, job = name in q.export_ids(), name in q.job_ids()
        found += ["export"] * export + ["job"] * job + ["node"]
        drop_fleece(q, name, export=export, job=job)
    if overlay is not None and overlay.exists():
        found.append("overlay")
        overlay.unlink()
    if found and not quiet:
        return [f"removed the fleecing {', '.join(found)} {name} that an interrupted cycle left"]
    return []


def drop_fleece(q: QmpSession, name: str, *, export: bool, job: bool) -> None:
    """Delete the export and cancel the job called ``name`` (both at once, then wait for their
    events), then delete the node they held."""
    commands: list[tuple[str, dict[str, Any]]] = []
    events: list[tuple[str, dict[str, Any]]] = []
    if export:
        commands.append(("block-export-del", {"id": name, "mode": "hard"}))
        events.append(("BLOCK_EXPORT_DELETED", {"id": name}))
    if job:
        commands.append(("block-job-cancel", {"device": name, "force": True}))
        events.append(("JOB_STATUS_CHANGE", {"id": name, "status": "null"}))
    if commands:
        for refused in q.run_awaiting(commands, events):
            if "block-job-cancel" not in refused.message:
                raise refused
            # The job ended by itself (e.g. its target failed) and may still be dismissing.
            q.wait_until(lambda: name not in q.job_ids(), f"end job {name}")
    q.run("blockdev-del", **{"node-name": name})


def new_overlay(path: Path, size: int) -> None:
    """An empty qcow2 of ``size`` bytes: a copy of a template qemu-img made once (qemu-img costs
    ~40 ms a run, a copy of its ~200 KiB well under 1 ms: it is a fixed cost of every cycle)."""
    template = path.parent / f"{TEMPLATE_PREFIX}{size}.qcow2"
    if not template.exists():
        part = template.with_suffix(f".{os.getpid()}.part")
        _qemu_img("create", "-q", "-f", "qcow2", str(part), str(size))
        os.replace(part, template)
    shutil.copyfile(template, path)


def _qemu_img(*args: str) -> None:
    try:
        subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise SourceError("qemu-img is not installed", hint="install qemu-utils") from None
    except subprocess.CalledProcessError as exc:
        said = exc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceError(f"qemu-img {args[0]} failed: {said[-1] if said else exc.returncode}",
                          hint="check that the fleecing folder exists, is writable and has free space") from None
