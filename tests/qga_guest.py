"""A small real guest for the guest-agent tests: QEMU (TCG) booting the host's kernel with an
initramfs that holds busybox, Debian's ``qemu-ga`` (package ``qemu-guest-agent``: the installed
binary, copied into the guest and never run on the host; without it the package is fetched once
with ``apt-get download`` into ``.tools/guest/qga-deb``) and the virtio and ext4 modules. Its init
mounts the data disk (``/dev/vda``, an ext4 in a qcow2 that is the live godwit source, node
``disk0``), keeps writing to it, and runs ``qemu-ga`` on the ``org.qemu.guest_agent.0``
virtio-serial port. So ``guest-fsfreeze-freeze`` freezes the guest's ext4, never the host's.

No systemd, no root filesystem: the guest is up in seconds even under TCG.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEB_CACHE = ROOT / ".tools" / "guest" / "qga-deb"
MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "ext4")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/sbin
mkdir -p /proc /sys /dev /run /mnt /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
for m in $(cat /modules.order); do insmod "$m"; done
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /mnt
PORT=""
for i in $(seq 50); do
  for d in /sys/class/virtio-ports/*; do
    [ "$(cat "$d/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && PORT=/dev/${d##*/}
  done
  [ -n "$PORT" ] && [ -c "$PORT" ] && break
  sleep 0.1
done
( n=0; while true; do n=$((n+1)); echo "$n" > /mnt/counter.new; mv /mnt/counter.new /mnt/counter
    dd if=/dev/urandom of=/mnt/churn bs=4096 count=8 conv=notrunc 2>/dev/null; sleep 0.05; done ) &
echo "godwit-guest: agent on $PORT"
/usr/sbin/qemu-ga -m virtio-serial -p "$PORT" -t /run &
while true; do sleep 1000; done
"""


def available() -> str | None:
    """Why the guest cannot be built here (None: it can)."""
    if shutil.which("qemu-system-x86_64") is None:
        return "needs qemu-system-x86"
    if not _kernels():
        return "needs a host kernel in /boot"
    if shutil.which("busybox") is None or shutil.which("cpio") is None:
        return "needs busybox and cpio"
    return None


def _kernels() -> list[str]:
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    return [k for k in kernels if os.path.isdir(f"/lib/modules/{k.split('vmlinuz-', 1)[1]}")]


def _qemu_ga_deb() -> Path:
    found = sorted(DEB_CACHE.glob("qemu-guest-agent_*.deb"))
    if found:
        return found[-1]
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "qemu-guest-agent"], cwd=DEB_CACHE, check=True, capture_output=True,
                   timeout=300)
    return sorted(DEB_CACHE.glob("qemu-guest-agent_*.deb"))[-1]


def _copy_with_libs(binary: Path, staging: Path, dest: str) -> None:
    target = staging / dest.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, target)
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts and parts[0].startswith("/") else ""
        if lib.startswith("/"):
            to = staging / lib.lstrip("/")
            to.parent.mkdir(parents=True, exist_ok=True)
            if not to.exists():
                shutil.copy2(os.path.realpath(lib), to)


def build_initrd(work: Path) -> tuple[Path, Path]:
    """(kernel, initramfs) of the guest."""
    kernel = Path(_kernels()[-1])
    kver = kernel.name.split("vmlinuz-", 1)[1]
    staging = work / "initrd.root"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "bin").mkdir(parents=True)
    extracted = work / "qga-deb"
    agent = Path("/usr/sbin/qemu-ga")
    if not agent.exists():
        subprocess.run(["dpkg-deb", "-x", str(_qemu_ga_deb()), str(extracted)], check=True)
        agent = extracted / "usr" / "sbin" / "qemu-ga"
    _copy_with_libs(Path(shutil.which("busybox") or "busybox"), staging, "/bin/busybox")
    _copy_with_libs(agent, staging, "/usr/sbin/qemu-ga")
    order: list[str] = []
    for m in MODULES:
        out = subprocess.run(["modprobe", "-S", kver, "--show-depends", m], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            ko = line.split()[1] if line.startswith("insmod ") else ""
            if ko and ko not in order:
                order.append(ko)
                (staging / ko.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ko, staging / ko.lstrip("/"))
    (staging / "modules.order").write_text("\n".join(order) + "\n")
    (staging / "init").write_text(INIT)
    (staging / "init").chmod(0o755)
    initrd = work / "initrd.cpio"
    names = subprocess.run(["find", "."], cwd=staging, capture_output=True, text=True, check=True).stdout
    with open(initrd, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=staging, input=names.encode(), stdout=out,
                       check=True)
    shutil.rmtree(staging)
    shutil.rmtree(extracted, ignore_errors=True)
    return kernel, initrd


def data_disk(path: Path, size_mib: int = 64) -> Path:
    """A qcow2 holding an empty ext4 (made on the host: mkfs on a file, no mount)."""
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "data", str(raw)], check=True, capture_output=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()
    return path


class Guest:
    """The running VM: ``qmp`` and ``qga`` are the host-side unix sockets."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.qmp = work / "qmp.sock"
        self.qga = work / "qga.sock"
        self.console = work / "console.log"
        self.disk = data_disk(work / "data.qcow2")
        kernel, initrd = build_initrd(work)
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-machine", "accel=tcg", "-m", "256", "-display", "none", "-no-reboot",
             "-nic", "none", "-serial", f"file:{self.console}", "-kernel", str(kernel), "-initrd", str(initrd),
             "-append", "console=ttyS0 panic=-1 quiet rdinit=/init",
             "-blockdev", f"driver=file,filename={self.disk},node-name=file0",
             "-blockdev", "driver=qcow2,file=file0,node-name=disk0",
             "-device", "virtio-blk-pci,drive=disk0",
             "-chardev", f"socket,path={self.qmp},server=on,wait=off,id=qmp0", "-mon", "chardev=qmp0,mode=control",
             "-chardev", f"socket,path={self.qga},server=on,wait=off,id=qga0",
             "-device", "virtio-serial-pci", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"],
            stdout=subprocess.DEVNULL, stderr=open(work / "qemu.log", "wb"))  # noqa: SIM115

    @property
    def spec(self) -> str:
        return f"qemu+unix://{self.qmp}?node=disk0&fleece_dir={self.work / 'fleece'}&qga={self.qga}"

    def wait_for_agent(self, timeout: float = 80.0) -> None:
        from godwit.errors import SourceError
        from godwit.sources.qga import GuestAgent

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("the guest stopped: " + self.console.read_text(errors="replace")[-2000:])
            try:
                GuestAgent(self.qga, timeout=2).close()
                return
            except SourceError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the guest agent did not answer: "
                                       + self.console.read_text(errors="replace")[-2000:]) from None
                time.sleep(0.5)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(20)
