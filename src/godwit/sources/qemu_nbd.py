"""Supervising the qemu-nbd helper that serves an image to our libnbd client.

How the helper is run, and why:

- **Socket activation, clients connected first.** We bind a listening unix socket in a private
  directory, connect our client sockets to it, and only then start qemu-nbd with the listener as
  its systemd-activated socket (``LISTEN_FDS``). Without ``--persistent`` qemu-nbd exits when its
  last client goes, so from its first instant its life hangs on our connections: a godwit killed
  with SIGKILL closes them and qemu-nbd exits too. No pid file, no PR_SET_PDEATHSIG (which fires
  when the *thread* that forked exits, not the process). The socket path is removed once connected.
- **``force-share=on``, ``file.locking=off``, read-only:** we take no qemu image locks, so we can
  read an image a VM is writing, and a VM that starts during the cycle is never blocked by us.
- **Format given explicitly** (``driver=FMT``): qemu never probes; a fixed VHD is otherwise
  probed as raw, and a raw disk whose guest wrote a qcow2 header would be read as qcow2.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from godwit.errors import SourceError
from godwit.sources.qcow2_snapshot import delete_snapshot
from godwit.sources.qemu_img import image_opts, last_line
from godwit.sources.temp_names import temp_name

ALLOCATION = "base:allocation"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0

# /bin/sh moves the listener from stdin to fd 3 and sets LISTEN_PID to its own pid, which exec
# keeps: systemd's socket-activation protocol, which qemu-nbd speaks.
_ACTIVATE = 'exec 3<&0 0</dev/null; export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@"'


class ServerGone(Exception):
    pass


class NbdServer:
    """Everything an NbdSource holds outside Python: the qemu-nbd process, the NBD connections,
    the internal snapshot. ``release`` is run once, by ``close`` or by a finalizer at exit."""

    def __init__(self, path: Path, fmt: str, *, temp_tag: str | None = None) -> None:
        self.path = path
        self.fmt = fmt
        self.temp_tag = temp_tag
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: IO[bytes] | None = None
        self.handles: list[Any] = []
        self.snapshot: str | None = None
        self.sockdir: str | None = None

    def stderr_line(self) -> str:
        if self.stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self.stderr.seek(0)
            return last_line(self.stderr.read().decode(errors="replace"))
        return ""

    def release(self) -> list[str]:
        """Disconnect, stop qemu-nbd, delete the snapshot; returns warnings for people."""
        warnings: list[str] = []
        for h in self.handles:
            # Not the blocking shutdown(): a hung qemu-nbd must not hang us; it is killed below.
            with contextlib.suppress(Exception):
                h.aio_disconnect(0)
                deadline = time.monotonic() + STOP_TIMEOUT
                while not (h.aio_is_closed() or h.aio_is_dead()) and time.monotonic() < deadline:
                    h.poll(100)
        # Dropping the last reference closes the libnbd handle (the binding has no close()).
        self.handles.clear()
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None
        if self.sockdir is not None:
            shutil.rmtree(self.sockdir, ignore_errors=True)
            self.sockdir = None
        if self.snapshot is not None:
            if (warning := delete_snapshot(self.path, self.snapshot)) is not None:
                warnings.append(warning)
            self.snapshot = None
        return warnings

    def start(self, nbd: Any, connections: int) -> None:
        """Start qemu-nbd and connect ``connections`` libnbd handles to it."""
        path = self.path
        # mode 0700: private to us. A unix socket path must fit in 108 bytes: a long TMPDIR won't do.
        base = None if len(tempfile.gettempdir()) < 80 else "/tmp"
        self.sockdir = tempfile.mkdtemp(prefix=f"godwit-nbd-{temp_name(self.temp_tag)[:24]}-", dir=base)
        sockpath = os.path.join(self.sockdir, "nbd.sock")
        clients: list[socket.socket] = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(sockpath)
                listener.listen(connections)
                for _ in range(connections):
                    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    clients.append(client)
                    client.connect(sockpath)  # queued in the backlog until qemu-nbd accepts
                os.unlink(sockpath)  # connected sockets need no path: nothing is left on disk
                os.rmdir(self.sockdir)
                self.sockdir = None
                argv = ["qemu-nbd", "--read-only", f"--shared={connections}", "--image-opts"]
                if self.snapshot is not None:
                    argv.append(f"--load-snapshot={self.snapshot}")
                argv.append(image_opts(path, self.fmt, export=True))
                self.stderr = tempfile.TemporaryFile(prefix="godwit-nbd-err-")  # noqa: SIM115 - release() closes it
                # A session of its own: a Ctrl-C at the terminal reaches godwit, which closes cleanly,
                # rather than killing qemu-nbd under a read in progress.
                self.proc = subprocess.Popen(["/bin/sh", "-c", _ACTIVATE, "godwit-nbd", *argv],
                                             stdin=listener.fileno(), stdout=subprocess.DEVNULL,
                                             stderr=self.stderr, start_new_session=True)
            # Our copy of the listener is closed now: if qemu-nbd dies, our connections see EOF.
            deadline = time.monotonic() + START_TIMEOUT
            for client in clients:
                h = nbd.NBD()
                h.set_handle_name(f"godwit:{path.name}")
                h.add_meta_context(ALLOCATION)
                h.aio_connect_socket(client.fileno())
                client.detach()  # libnbd owns the descriptor now
                _handshake(h, deadline)
                self.handles.append(h)
        except (nbd.Error, ServerGone) as exc:
            raise self._start_error(getattr(exc, "string", None) or str(exc)) from None
        except TimeoutError:
            raise self._start_error(f"qemu-nbd did not answer within {START_TIMEOUT:.0f} s") from None
        except OSError as exc:
            raise SourceError(f"disk {path}: cannot start qemu-nbd: {exc.strerror or exc}",
                              hint="check that /tmp is writable and qemu-nbd runs") from None
        finally:
            for client in clients:
                client.close()  # no-op for detached sockets

    def _start_error(self, detail: str) -> SourceError:
        # qemu-nbd's own words (its last stderr line) say far more than the client's view.
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT)
        said = self.stderr_line().removeprefix("qemu-nbd: ")
        # "Failed to blk_new_open '<our long option string>': Image is not in qcow2 format" -> the reason
        if m := re.match(r"(?:Failed to blk_new_open|Could not open) '.*': (.+)$", said):
            said = m.group(1)
        return SourceError(f"disk {self.path} cannot be read as {self.fmt}: {said or detail}",
                           hint=f"check the image with `qemu-img check -U -f {self.fmt} {self.path}`, "
                                "and that its format is right")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # qemu-nbd exits by itself once its clients are gone; SIGTERM, then SIGKILL, if it lingers.
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            continue


def _handshake(h: Any, deadline: float) -> None:
    while not h.aio_is_ready():
        if h.aio_is_dead() or h.aio_is_closed():
            raise ServerGone("qemu-nbd closed the connection")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        h.poll(max(1, int(min(left, 1.0) * 1000)))
