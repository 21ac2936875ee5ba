"""Judging a guest's facts (from ``guest``) by the rule book: a list of findings."""

from __future__ import annotations

from typing import Any

from godwit.assess import linux_config
from godwit.assess.rules import Finding, RuleBook

GiB = 1 << 30


def generation(disk: dict[str, Any]) -> tuple[int | None, str]:
    """The Azure VM generation the OS disk's layout asks for, and the rule that says so."""
    table = disk.get("partition_table")
    if table == "gpt" and disk.get("esp"):
        return 2, "boot.gen2"
    if table == "gpt":
        return 1, "boot.gpt_bios"
    if table == "msdos":
        return 1, "boot.gen1"
    return None, "boot.unknown"


def os_disk_index(facts: dict[str, Any]) -> int:
    """The disk the root filesystem lives on (libguestfs names them /dev/sda, /dev/sdb, ...)."""
    root = str(facts.get("root_device") or "")
    for d in facts["disks"]:
        if root.startswith(d["device"]):
            return int(d["index"])
    return 0


def _os(book: RuleBook, os: dict[str, Any]) -> Finding:
    key = "windows" if os["type"] == "windows" else os.get("distro", "")
    oldest = book.endorsed.get(key)
    values = {k: os.get(k, "?") for k in ("product", "distro", "major", "minor")}
    if isinstance(oldest, int) and int(os.get("major") or 0) >= oldest:
        return book["os.endorsed"].finding(**values)
    return book["os.not_endorsed"].finding(**values)


def _disks(book: RuleBook, facts: dict[str, Any], gen: int | None) -> list[Finding]:
    out = []
    lim = book.limits
    root = os_disk_index(facts)
    for d in facts["disks"]:
        gib = -(-int(d["size"]) // GiB)
        name = f"disk{d['index']}"
        if d["index"] == root:
            limit = lim["os_disk_gib_gen2"] if gen == 2 else lim["os_disk_gib_gen1"]
            if gib > limit:
                out.append(book["disk.os_too_big"].finding(disk=name, gib=gib, limit=limit, generation=gen or 1))
                continue
        elif gib > lim["data_disk_gib"]:
            out.append(book["disk.data_too_big"].finding(disk=name, gib=gib, limit=lim["data_disk_gib"]))
            continue
        out.append(book["disk.size_ok"].finding(disk=name, gib=gib))
    return out


def _kernel(book: RuleBook, k: dict[str, Any]) -> list[Finding]:
    if not k.get("version"):
        return [book["kernel.none"].finding()]
    have = set(k.get("initrd_modules", [])) | set(k.get("builtin", []))
    version = k["version"]
    if k.get("initrd") is None:
        if {"hv_vmbus", "hv_storvsc"} <= set(k.get("builtin", [])):
            return [book["kernel.hyperv_ready"].finding(version=version, drivers="built in")]
        built_in = ", ".join(k.get("builtin", [])) or "none"
        return [book["kernel.no_initrd"].finding(version=version, drivers=built_in)]
    if k.get("error"):
        return [book["kernel.initrd_unreadable"].finding(version=version, initrd=k["initrd"], error=k["error"])]
    missing = [m for m in ("hv_vmbus", "hv_storvsc") if m not in have]
    if missing:
        return [book["kernel.hyperv_missing"].finding(version=version, missing=", ".join(missing))]
    if "hv_netvsc" not in have:
        return [book["kernel.netvsc_missing"].finding(version=version)]
    return [book["kernel.hyperv_ready"].finding(version=version, drivers=", ".join(sorted(have)))]


def _linux_files(book: RuleBook, files: dict[str, str]) -> list[Finding]:
    out = []
    entries = linux_config.fstab(files.get("/etc/fstab", ""))
    bad = linux_config.device_named(entries)
    out += [book["fstab.device_name"].finding(mountpoint=e.mountpoint, device=e.device) for e in bad]
    if not bad:
        out.append(book["fstab.ok"].finding())
    issues = linux_config.network(files)
    for i in issues:
        out.append(book[f"network.{i.kind}"].finding(file=i.file, interface=i.interface, mac=i.mac))
    if not issues:
        out.append(book["network.ok"].finding())
    return out


def _windows(book: RuleBook, win: dict[str, Any]) -> list[Finding]:
    if "error" in win:
        return [book["windows.unread"].finding(error=win["error"])]
    out = []
    for driver, start in win.get("drivers", {}).items():
        boot = driver in ("vmbus", "storvsc")
        ok = start is not None and (start == 0 if boot else start <= 3)
        if ok:
            out.append(book["windows.driver_ok"].finding(driver=driver, start=start))
        else:
            why = "disabled" if start == 4 else "not at boot"
            state = "not installed" if start is None else f"Start={start} ({why})"
            out.append(book["windows.driver_off"].finding(driver=driver, state=state))
    return out


def evaluate(book: RuleBook, facts: dict[str, Any]) -> tuple[list[Finding], int | None]:
    """The findings for one server, and the VM generation (None when unknown)."""
    out: list[Finding] = []
    os = facts.get("os")
    out += [book["os.encrypted"].finding(device=dev) for dev in facts.get("encrypted", [])]
    if os is None:
        return out, None
    out.append(_os(book, os))
    gen, rule = generation(facts["disks"][os_disk_index(facts)])
    out.append(book[rule].finding())
    out += _disks(book, facts, gen)
    if os["type"] == "windows":
        out += _windows(book, facts.get("windows", {}))
        return out, gen
    out += _kernel(book, facts.get("kernel", {}))
    out += _linux_files(book, facts.get("files", {}))
    agents = [name for name, present in facts.get("agents", {}).items() if present]
    if agents:
        out.append(book["agent.present"].finding(agents=" and ".join(agents)))
    else:
        out.append(book["agent.missing"].finding())
    return out, gen
