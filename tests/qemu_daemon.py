"""A real qemu-storage-daemon serving one disk image to a "guest" (a writable NBD export) and a
QMP monitor to godwit — a live QEMU disk without a VM.

The guest writes through the export ``disk0`` on ``nbd.sock`` with libnbd; godwit's disk spec is
``daemon.spec``. With ``disks=N`` the daemon serves N images (nodes and exports ``disk0`` …
``disk<N-1>``, specs ``daemon.specs``), as one QEMU with several disks. ``kill()`` is the
unclean stop (SIGKILL), ``stop()`` the clean one (SIGTERM).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

NODE = "disk0"


class QemuDaemon:
    def __init__(self, folder: Path, *, fmt: str = "qcow2", size: int = 16 << 20, fleece_dir: Path | None = None,
                 image: Path | None = None, nbd_server: bool = True, disks: int = 1) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.image = image or folder / f"disk.{fmt}"
        self.images = [self.image] + [folder / f"disk{i}.{fmt}" for i in range(1, disks)]
        self.qmp_sock = folder / "qmp.sock"
        self.nbd_sock = folder / "nbd.sock"
        self.fleece_dir = fleece_dir
        self.nbd_server = nbd_server  # False: no guest export; godwit must start QEMU's NBD server
        self.proc: subprocess.Popen[bytes] | None = None
        for img in self.images:
            if not img.exists():
                subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(img), str(size)], check=True)
        self._guest: Any = None
        self._guests: dict[int, Any] = {}
        self.qga: Path | None = None  # a guest agent socket to name in the specs

    @property
    def spec(self) -> str:
        return self.specs[0]

    @property
    def specs(self) -> list[str]:
        extra = f"&fleece_dir={self.fleece_dir}" if self.fleece_dir else ""
        extra += f"&qga={self.qga}" if self.qga else ""
        nbd = f"&nbd={self.nbd_sock}" if self.nbd_server else ""
        return [f"qemu+unix://{self.qmp_sock}?node=disk{i}{nbd}{extra}" for i in range(len(self.images))]

    def start(self) -> QemuDaemon:
        for s in (self.qmp_sock, self.nbd_sock):
            s.unlink(missing_ok=True)
        guest = ["--nbd-server", f"addr.type=unix,addr.path={self.nbd_sock}"] if self.nbd_server else []
        blockdevs = []
        for i, img in enumerate(self.images):
            blockdevs += ["--blockdev", f"driver=file,filename={img},node-name=file{i}",
                          "--blockdev", f"driver={self.fmt},file=file{i},node-name=disk{i}"]
            if self.nbd_server:
                guest += ["--export", f"type=nbd,id={'guest' if i == 0 else f'guest{i}'},node-name=disk{i},writable=on"]
        self.proc = subprocess.Popen(
            ["qemu-storage-daemon",
             *blockdevs,
             *guest,
             "--chardev", f"socket,path={self.qmp_sock},server=on,wait=off,id=qmp0",
             "--monitor", "chardev=qmp0"],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "qsd.log", "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 20
        while not (self.qmp_sock.exists() and (self.nbd_sock.exists() or not self.nbd_server)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("qemu-storage-daemon did not start: "
                                   + (self.folder / "qsd.log").read_text()[-500:])
            time.sleep(0.02)
        return self

    def _handle(self, disk: int = 0) -> Any:
        import nbd

        h = nbd.NBD()
        h.set_export_name(f"disk{disk}")
        h.connect_unix(str(self.nbd_sock))
        return h

    def write(self, offset: int, data: bytes) -> None:
        """A guest write (through the daemon, so the dirty bitmaps see it)."""
        if self._guest is None:
            self._guest = self._handle()
        self._guest.pwrite(data, offset)
        self._guest.flush()

    def read_all(self, disk: int = 0) -> bytes:
        h = self._handle(disk)
        try:
            size = h.get_size()
            return b"".join(bytes(h.pread(min(4 << 20, size - o), o)) for o in range(0, size, 4 << 20))
        finally:
            h.shutdown()

    def close_guest(self) -> None:
        if self._guest is not None:
            with contextlib.suppress(Exception):
                self._guest.shutdown()
            self._guest = None

    def resize(self, size: int) -> None:
        """Grow the disk (as a VM's block_resize would). The guest export does not share the
        resize permission, so it is removed for the resize and added again."""
        from godwit.sources.qmp import QmpSession

        self.close_guest()
        with QmpSession(self.qmp_sock) as q:
            q.run("block-export-del", id="guest")
            q.wait_until(lambda: "guest" not in q.export_ids(), "delete the guest export")
            q.run("block_resize", **{"node-name": NODE}, size=size)
            q.run("block-export-add", type="nbd", id="guest", **{"node-name": NODE}, writable=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.close_guest()
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
            self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def qmp(self, command: str, **args: Any) -> Any:
        from godwit.sources.qmp import QmpSession

        with QmpSession(self.qmp_sock) as q:
            return q.run(command, **args)

    def bitmaps(self, disk: int = 0) -> dict[str, dict[str, Any]]:
        from godwit.sources.qmp import QmpSession

        with QmpSession(self.qmp_sock) as q:
            return q.bitmaps(f"disk{disk}")


WRITER = textwrap.dedent("""
    import os, random, sys, time, nbd
    sock, size, rate, seed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    h = nbd.NBD(); h.set_export_name("disk0"); h.connect_unix(sock)
    start, sent = time.monotonic(), 0
    while True:
        n = rng.randrange(4096, 65537) // 512 * 512
        off = rng.randrange(0, size - n) // 512 * 512
        if rng.random() < 0.8:
            h.pwrite(rng.randbytes(n), off)
        else:  # a discard-like zeroing: the cluster may read back as a hole (base:allocation zero)
            h.zero(n, off)  # without CMD_FLAG_NO_HOLE QEMU may punch a hole
        sent += n
        ahead = sent / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
""")


def start_writer(daemon: QemuDaemon, size: int, rate: float = 2e6, seed: int = 7) -> subprocess.Popen[bytes]:
    """A process that keeps writing random 4-64 KiB pieces through the guest export at ``rate`` B/s."""
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-c", WRITER, str(daemon.nbd_sock), str(size), str(rate), str(seed)],
                            env=env, stderr=subprocess.PIPE)


def kind_of(bitmap: str) -> str:
    """A godwit bitmap's name without its random token: godwit-next-b1-1a2b3c4d -> godwit-next-b1."""
    return bitmap.rsplit("-", 1)[0] if bitmap.startswith("godwit-next-") else bitmap


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
