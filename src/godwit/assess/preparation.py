"""`godwit prepare NAME --for azure`: fix, on a test migration's own files, what keeps them from
booting in Azure (``prepare_guest`` does the work inside libguestfs's appliance).

Only files that godwit's latest test migration of the server wrote are touched, and only when
they are still those very files (path, inode and modification time as recorded): never a replica,
never a file put there since. Afterwards the record is restamped, so `migrate cleanup` still
removes them, and the report of every change is written beside them (``NAME-prepare-azure.json``)
and counted in the event log.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from godwit.assess.child import run_child
from godwit.errors import AssessError, NotFoundError, UsageError
from godwit.project.project import Project

FORMATS = {"raw": "raw", "vhd": "vpc", "qcow2": "qcow2"}  # godwit's export format → qemu's driver


class Change(BaseModel):
    file: str
    change: str


class Refusal(BaseModel):
    item: str
    reason: str


class Preparation(BaseModel):
    server: str
    target: str
    disks: list[str]
    distro: str
    changes: list[Change]
    refused: list[Refusal]
    report: str
    seconds: float


def _stamp(path: str) -> str:
    st = os.stat(path)
    return f"{path}\0{st.st_ino}\0{st.st_mtime_ns}"


def prepare(project: Project, name: str, *, target: str = "azure", timeout: float = 900.0) -> Preparation:
    t0 = time.perf_counter()
    if target != "azure":
        raise UsageError(f"target {target!r} is unknown", hint="use --for azure")
    server = project.db.server(name)
    with project.db.unit() as u:
        records = u.migrations.outstanding_tests(server.id)
    if not records:
        raise NotFoundError(f"server {name} has no test migration to prepare",
                            hint=f"run `godwit migrate {name} --test --out DIR` first")
    rec = records[-1]
    if rec.format not in FORMATS:
        raise UsageError(f"a {rec.format} migration cannot be prepared here",
                         hint="migrate with --format raw, vhd or qcow2")
    disks = []
    for entry in rec.files:
        path = entry.partition("\0")[0]
        if path.endswith(".json"):
            continue  # an earlier preparation's report
        try:
            if _stamp(path) != entry:
                raise AssessError(f"{path} changed since the test migration wrote it; godwit prepares "
                                  "only its own output",
                                  hint=f"run `godwit migrate cleanup {name}` and migrate again")
        except FileNotFoundError:
            raise AssessError(f"{path} of the test migration is gone") from None
        disks.append(path)
    with tempfile.TemporaryDirectory(prefix="godwit-prepare-") as work:
        result = run_child("godwit.assess.prepare_guest", [FORMATS[rec.format], *disks], timeout, Path(work))
    if "refusal" in result:
        raise AssessError(f"guest preparation refused: {result['refusal']}",
                          hint="the disks are unchanged; prepare the source server by hand, then migrate again")
    if "error" in result:
        raise AssessError(f"guest preparation failed: {result['error']}",
                          hint="the disks may be partly changed: `godwit migrate cleanup` and migrate again")
    report = Path(rec.out_dir) / f"{name}-prepare-{target}.json"
    prep = Preparation(server=name, target=target, disks=disks, distro=result["distro"],
                       changes=[Change(**c) for c in result["changes"]],
                       refused=[Refusal(**r) for r in result["refused"]], report=str(report),
                       seconds=round(time.perf_counter() - t0, 2))
    tmp = report.with_name(report.name + ".partial")
    tmp.write_text(json.dumps(prep.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, report)
    with project.db.unit() as u:
        u.migrations.restamp(rec.id, [_stamp(p) for p in disks] + [_stamp(str(report))])
        u.events.add("info", f"test migration prepared for {target}: {len(prep.changes)} change(s), "
                             f"{len(prep.refused)} refused (report {report})", server=name)
    return prep
