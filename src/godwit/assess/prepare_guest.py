"""Preparing a migrated Linux disk for Azure, in a child process (``python -m godwit.assess.prepare_guest``).

Runs on the migrated copy only (the files a migration wrote), never on a replica: the parent
passes output files, opened read-write with their explicit format. What is safe offline is done
and recorded; what is not is refused with the reason, and nothing is half-done per item:

- fstab entries by device name → ``UUID=`` of the filesystem the appliance finds there;
- ifupdown stanzas with a static address or a pinned MAC → DHCP on the same interface; udev
  persistent-net rules disabled (renamed). Other network tools (netplan, NetworkManager, networkd,
  ifcfg) are reported, not rewritten;
- the Hyper-V drivers added to the initramfs configuration (initramfs-tools' ``modules`` file or
  a dracut drop-in) and the initramfs rebuilt by the guest's own tool, run inside the appliance.

Every changed file keeps its original beside it as ``FILE.godwit-orig``.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from godwit.assess import linux_config
from godwit.assess.guest import HV_MODULES, Guest, GuestProblem


class Refused(Exception):
    pass


class Preparer:
    def __init__(self, g: Any, guest: Guest) -> None:
        self.g, self.guest = g, guest
        self.changes: list[dict[str, str]] = []
        self.refused: list[dict[str, str]] = []

    def _write(self, path: str, text: str, what: str) -> None:
        old = self.guest.text(path)
        if old is not None and not self.g.exists(path + ".godwit-orig"):
            self.g.cp_a(path, path + ".godwit-orig")
        self.g.write(path, text.encode())
        self.changes.append({"file": path, "change": what})

    def fstab(self, mountpoints: dict[str, str]) -> None:
        text = self.guest.text("/etc/fstab")
        if text is None:
            return
        lines = text.splitlines(keepends=True)
        changed = []
        for e in linux_config.device_named(linux_config.fstab(text)):
            dev = mountpoints.get(e.mountpoint) or e.device
            try:
                uuid = str(self.g.vfs_uuid(dev))
            except RuntimeError:
                uuid = ""
            if not uuid:
                self.refused.append({"item": f"fstab {e.device} {e.mountpoint}",
                                     "reason": f"no filesystem UUID found for {e.device}"})
                continue
            lines[e.line - 1] = lines[e.line - 1].replace(e.device, f"UUID={uuid}", 1)
            changed.append(f"{e.device} → UUID={uuid} ({e.mountpoint})")
        if changed:
            self._write("/etc/fstab", "".join(lines), "; ".join(changed))

    def network(self, files: dict[str, str]) -> None:
        issues = linux_config.network(files)
        for issue in issues:
            if issue.kind == "persistent_rules":
                self.g.mv(issue.file, issue.file + ".godwit-disabled")
                self.changes.append({"file": issue.file, "change": "disabled (renamed .godwit-disabled)"})
            elif issue.file != "/etc/network/interfaces":
                self.refused.append({"item": f"network {issue.file}",
                                     "reason": f"a {issue.kind} setting in a file godwit does not rewrite"})
        text = files.get("/etc/network/interfaces")
        if text is None or not any(i.file == "/etc/network/interfaces" for i in issues):
            return
        out, ifaces = [], []
        for raw in text.splitlines():
            words = raw.split("#", 1)[0].split()
            if words[:1] == ["iface"] and len(words) >= 4 and words[1] != "lo" and words[3] == "static":
                out.append(f"iface {words[1]} {words[2]} dhcp")
                ifaces.append(words[1])
            elif words[:1] in (["address"], ["netmask"], ["gateway"], ["hwaddress"], ["broadcast"], ["network"]):
                continue
            else:
                out.append(raw)
        self._write("/etc/network/interfaces", "\n".join(out) + "\n",
                    f"DHCP for {', '.join(ifaces) or 'the interfaces'}; static addresses and MAC addresses removed")

    def initramfs(self, kernel: dict[str, Any]) -> None:
        version = kernel.get("version")
        have = set(kernel.get("initrd_modules", [])) | set(kernel.get("builtin", []))
        if not version or set(HV_MODULES) <= have:
            return
        g = self.g
        if g.exists("/usr/sbin/update-initramfs") or g.is_symlink("/usr/sbin/update-initramfs"):
            conf = "/etc/initramfs-tools/modules"
            old = self.guest.text(conf) or ""
            present = set(re.findall(r"^\s*(\S+)", old, re.M))
            add = [m for m in HV_MODULES if m not in present]
            if add:
                self._write(conf, old + ("" if old.endswith("\n") or not old else "\n") + "\n".join(add) + "\n",
                            f"added {', '.join(add)}")
            cmd = ["update-initramfs", "-u", "-k", version]
        elif g.exists("/usr/bin/dracut") or g.exists("/usr/sbin/dracut"):
            self._write("/etc/dracut.conf.d/90-godwit-hyperv.conf",
                        f'add_drivers+=" {" ".join(HV_MODULES)} "\n', "Hyper-V drivers for dracut")
            cmd = ["dracut", "-f", str(kernel.get("initrd") or f"/boot/initramfs-{version}.img"), version]
        else:
            self.refused.append({"item": f"initramfs of {version}",
                                 "reason": "the guest has neither update-initramfs nor dracut to rebuild it"})
            return
        try:
            g.command(cmd)
        except RuntimeError as exc:
            self.refused.append({"item": f"initramfs of {version}", "reason": f"{' '.join(cmd)} failed: {exc}"})
            return
        self.changes.append({"file": str(kernel.get("initrd") or version), "change": f"rebuilt: {' '.join(cmd)}"})


def prepare(fmt: str, files: list[str]) -> dict[str, Any]:
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    try:
        for f in files:
            g.add_drive_opts(f, format=fmt, readonly=False)
        g.set_network(False)
        g.launch()
        guest = Guest(g)
        guest.precheck()
        if crypt := guest.encrypted():
            raise Refused(f"encrypted volume {crypt[0]}: godwit does not prepare encrypted guests")
        roots = g.inspect_os()
        if not roots:
            raise Refused("no operating system found on the migrated disks")
        root = roots[0]
        if g.inspect_get_type(root) != "linux":
            raise Refused(f"{g.inspect_get_product_name(root)}: guest preparation is for Linux guests only")
        distro = g.inspect_get_distro(root)
        if distro == "unknown":
            raise Refused("an unknown Linux distribution: godwit does not know its tools")
        points = g.inspect_get_mountpoints(root)
        for mp, dev in sorted(points.items(), key=lambda kv: len(kv[0])):
            g.mount(dev, mp)
        p = Preparer(g, guest)
        p.fstab(points)
        p.network(guest.config_files())
        p.initramfs(guest.kernel())
        g.umount_all()
        g.shutdown()
        return {"distro": distro, "changes": p.changes, "refused": p.refused}
    finally:
        g.close()


def main(argv: list[str]) -> int:
    try:
        result = prepare(argv[0], argv[1:])
    except Refused as exc:
        json.dump({"refusal": str(exc)}, sys.stdout)
        return 3
    except GuestProblem as exc:
        json.dump({"error": str(exc)}, sys.stdout)
        return 3
    except RuntimeError as exc:
        json.dump({"error": f"libguestfs: {exc}"}, sys.stdout)
        return 3
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
