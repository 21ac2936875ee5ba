"""`godwit doctor`: is this host ready for a long migration? Each check passes, warns or fails.

Host checks always run: the QEMU tools and their versions, the libnbd binding, the clock. Inside
a project, also its local cache and replicas folders' filesystems (type, O_DIRECT, reflink, free
space) and its state database (reachable, at the current schema revision; read-only). Nothing
here raises for what it finds, and nothing is changed unless ``fix`` is asked for: then Debian's
libnbd binding is linked into the running environment (the only fix doctor makes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from godwit.checks import libnbd_link
from godwit.checks.clock import check_clock
from godwit.checks.filesystem import check_folder
from godwit.checks.finding import Finding, failed, passed
from godwit.checks.host_tools import check_guestfs, check_libnbd, check_qemu
from godwit.checks.state_revision import check_state
from godwit.errors import GodwitError

#: What `godwit doctor` exits with when at least one check fails (warnings alone exit 0).
EXIT_FAILED = 1


@dataclass
class Report:
    project: Path | None
    findings: list[Finding] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.status == "fail" for f in self.findings)

    def counts(self) -> dict[str, int]:
        return {s: sum(f.status == s for f in self.findings) for s in ("pass", "warn", "fail")}

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "project": str(self.project) if self.project else None, "counts": self.counts(),
                "fixed": self.fixed, "checks": [f.as_dict() for f in self.findings]}


def fix_libnbd(report: Report) -> None:
    """Link Debian's bindings (libnbd, and libguestfs when installed) that are not importable and
    can be linked; record what was done."""
    for spec in (libnbd_link.NBD, libnbd_link.GUESTFS):
        _fix_binding(report, spec)


def _fix_binding(report: Report, spec: libnbd_link.Spec) -> None:
    if libnbd_link.importable(spec)[0] or libnbd_link.why_not_linkable(spec=spec) is not None:
        return  # nothing to do, or nothing doctor can do (the binding's check names the fix)
    try:
        made = libnbd_link.link(spec=spec)
    except OSError as exc:
        report.findings.append(failed("fix: libnbd link", f"cannot link into {exc.filename or 'site-packages'}: "
                                      f"{exc.strerror or exc}", "run `godwit doctor --fix` as the user that "
                                      "owns godwit's environment (or inside a venv you own)"))
        return
    report.fixed += [f"linked {p} -> {p.resolve()}" for p in made]


def project_checks(root: Path) -> list[Finding]:
    from godwit.config.model import load
    from godwit.project.project import CONFIG_NAME, state_url

    try:
        cfg = load(root / CONFIG_NAME)
    except GodwitError as exc:
        return [failed("project: godwit.toml", exc.message, exc.hint or "fix godwit.toml")]
    found = [passed("project: godwit.toml", f"{root / CONFIG_NAME} is valid (project {cfg.name})")]
    if cfg.cache.kind == "local":
        found += check_folder("cache", (root / cfg.cache.path).resolve())
    else:
        found.append(passed("cache: store", f"{cfg.cache.kind} (not a local folder): "
                            "`godwit store check` tries it for real"))
    if cfg.replicas.kind == "local":
        replicas = (root / cfg.replicas.path).resolve()
        found += check_folder("replicas", replicas, direct=False, reflink=False)  # plain pwrite, no clones
    found += check_state(state_url(root, cfg))  # --database-url / $GODWIT_DATABASE_URL, [state] url, SQLite
    return found


def run_doctor(project: Path | None, *, fix: bool = False) -> Report:
    """Every check; ``project`` is a project folder, or None outside one (host checks only)."""
    report = Report(project.resolve() if project else None)
    if fix:
        fix_libnbd(report)
    report.findings += check_qemu()
    report.findings.append(check_libnbd())
    report.findings.append(check_guestfs())
    report.findings += check_clock()
    if report.project is not None:
        report.findings += project_checks(report.project)
    return report
