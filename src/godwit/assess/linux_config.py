"""What a Linux guest's configuration files say that matters in Azure: fstab devices, pinned
MAC addresses, static addresses. Pure text parsing (the files come from ``guest``), so each
format's reading is tested on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Kernel device names that are assigned in probe order and differ in Azure (where /dev/sdb is
#: the temporary resource disk). UUID=, LABEL=, /dev/mapper/ and /dev/disk/by-* are stable.
DEVICE_NAME = re.compile(r"^/dev/(sd[a-z]+|hd[a-z]+|vd[a-z]+|xvd[a-z]+|nvme\d+n\d+)(p?\d+)?$")
MAC = r"(?:[0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}"


@dataclass(frozen=True)
class FstabEntry:
    device: str
    mountpoint: str
    fstype: str
    line: int


@dataclass(frozen=True)
class NetIssue:
    kind: str  # "static", "mac" or "persistent_rules"
    file: str
    interface: str
    mac: str = ""


def fstab(text: str) -> list[FstabEntry]:
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split()
        if len(line) >= 3:
            out.append(FstabEntry(line[0], line[1], line[2], n))
    return out


def device_named(entries: list[FstabEntry]) -> list[FstabEntry]:
    return [e for e in entries if DEVICE_NAME.match(e.device)]


def _ifupdown(path: str, text: str) -> list[NetIssue]:
    issues, iface = [], "?"
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if words[:1] == ["iface"] and len(words) >= 4:
            iface = words[1]
            if words[3] == "static" and iface != "lo":
                issues.append(NetIssue("static", path, iface))
        elif words[:1] == ["hwaddress"] and words:
            m = re.search(MAC, raw)
            issues.append(NetIssue("mac", path, iface, m.group(0) if m else words[-1]))
    return issues


def _netplan(path: str, text: str) -> list[NetIssue]:
    """A YAML file read line by line (no YAML parser for hostile input): an interface is a key
    indented under ethernets/bonds/..., an address with a /prefix is static (nameservers have none)."""
    issues = []
    iface, static = "?", False
    dhcp = re.search(r"dhcp4:\s*(true|yes)", text) is not None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0]
        m = re.match(r"^\s{4}([A-Za-z0-9_.-]+):\s*$", line)
        if m:
            iface = m.group(1)
        if (mac := re.search(rf"macaddress:\s*['\"]?({MAC})", line)) is not None:
            issues.append(NetIssue("mac", path, iface, mac.group(1)))
        cidr = re.search(r"\d+\.\d+\.\d+\.\d+/\d+", line)
        if cidr and not dhcp and not static:
            issues.append(NetIssue("static", path, iface))
            static = True  # one finding per file is enough
    return issues


def _keyvalues(path: str, text: str) -> list[NetIssue]:
    """ifcfg-* (RHEL, SUSE) and NetworkManager keyfiles."""
    issues = []
    values: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep:
            values[f"{section}.{key.strip()}" if section else key.strip()] = value.strip().strip("'\"")
    iface = values.get("DEVICE") or values.get("connection.interface-name") or path.rsplit("ifcfg-", 1)[-1]
    mac = values.get("HWADDR") or values.get("MACADDR") or values.get("ethernet.mac-address")
    if mac:
        issues.append(NetIssue("mac", path, iface, mac))
    if (values.get("BOOTPROTO", "").lower() in ("static", "none") and values.get("IPADDR")) or \
            values.get("ipv4.method") == "manual":
        issues.append(NetIssue("static", path, iface))
    return issues


def _networkd(path: str, text: str) -> list[NetIssue]:
    issues = []
    name = re.search(r"^\s*Name\s*=\s*(\S+)", text, re.M)
    iface = name.group(1) if name else path.rsplit("/", 1)[-1]
    if (mac := re.search(rf"^\s*MACAddress\s*=\s*({MAC})", text, re.M)) is not None:
        issues.append(NetIssue("mac", path, iface, mac.group(1)))
    if re.search(r"^\s*Address\s*=", text, re.M) and not re.search(r"^\s*DHCP\s*=\s*(yes|ipv4|true)", text, re.M):
        issues.append(NetIssue("static", path, iface))
    return issues


def network(files: dict[str, str]) -> list[NetIssue]:
    issues: list[NetIssue] = []
    for path, text in sorted(files.items()):
        if path == "/etc/network/interfaces" or path.startswith("/etc/network/interfaces.d/"):
            issues += _ifupdown(path, text)
        elif path.startswith("/etc/netplan/"):
            issues += _netplan(path, text)
        elif "/ifcfg-" in path or path.startswith("/etc/NetworkManager/"):
            issues += _keyvalues(path, text)
        elif path.startswith("/etc/systemd/network/"):
            issues += _networkd(path, text)
        elif path.startswith("/etc/udev/rules.d/") and re.search(r"ATTR\{address\}", text):
            issues.append(NetIssue("persistent_rules", path, "*"))
    return issues
