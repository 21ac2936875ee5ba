"""A read-only NBD server over a Unix socket that serves one recovery point (a ``PointReader``).

libguestfs's appliance reads the replica through it, so any replica (a sparse file with undo
journals, a page-blob snapshot) is assessed at any recovery point without a copy, and nothing the
appliance does can write to it: the server answers every write, trim or zero with EPERM.

The protocol is the fixed newstyle handshake of the NBD spec (doc/proto.md in the NBD project):
``NBD_OPT_GO`` / ``NBD_OPT_INFO`` / ``NBD_OPT_EXPORT_NAME``, then simple replies to
``NBD_CMD_READ``, ``NBD_CMD_FLUSH`` and ``NBD_CMD_DISC``. Structured replies and metadata
contexts are refused (the client falls back to simple replies).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import threading
from pathlib import Path

from godwit.replicas.base import PointReader

log = logging.getLogger(__name__)

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP, REP_ERR_INVALID = 0x80000001, 0x80000003
INFO_EXPORT = 0
TFLAG_HAS_FLAGS, TFLAG_READ_ONLY, TFLAG_SEND_FLUSH = 1, 2, 4
CMD_READ, CMD_DISC, CMD_FLUSH = 0, 2, 3

MAX_OPTION = 4096  # an option longer than this is not from a real client
MAX_READ = 32 << 20  # qemu asks for at most 32 MiB at a time


class _Closed(Exception):
    pass


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise _Closed
        buf += chunk
    return bytes(buf)


class PointServer:
    """Serve ``reader`` read-only at ``socket_path`` until :meth:`close` (a context manager).

    Each connection gets its own thread; reads are serialised on a lock because a PointReader is
    not promised to be thread-safe.
    """

    def __init__(self, reader: PointReader, socket_path: Path) -> None:
        self.reader = reader
        self.path = socket_path
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(socket_path))
        os.chmod(socket_path, 0o600)
        self._sock.listen(4)
        self._conns: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, name=f"nbd {socket_path.name}", daemon=True)
        self._thread.start()

    def __enter__(self) -> PointServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for c in list(self._conns):
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self._handshake(conn):
                self._transmit(conn)
        except (_Closed, OSError):
            pass
        except Exception:  # a reader error ends this connection; the appliance sees EIO
            log.exception("NBD connection to %s failed", self.path)
        finally:
            conn.close()
            with contextlib.suppress(ValueError):
                self._conns.remove(conn)

    # -- handshake --------------------------------------------------------------------------
    def _reply(self, conn: socket.socket, opt: int, kind: int, data: bytes = b"") -> None:
        conn.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, kind, len(data)) + data)

    def _tflags(self) -> int:
        return TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_SEND_FLUSH

    def _handshake(self, conn: socket.socket) -> bool:
        conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        (client_flags,) = struct.unpack(">I", _recv(conn, 4))
        while True:
            magic, opt, length = struct.unpack(">QII", _recv(conn, 16))
            if magic != IHAVEOPT or length > MAX_OPTION:
                return False
            _recv(conn, length)  # the export name and info requests: there is one export
            if opt == OPT_EXPORT_NAME:
                tail = b"" if client_flags & FLAG_NO_ZEROES else bytes(124)
                conn.sendall(struct.pack(">QH", self.reader.size, self._tflags()) + tail)
                return True
            if opt == OPT_ABORT:
                self._reply(conn, opt, REP_ACK)
                return False
            if opt == OPT_LIST:
                self._reply(conn, opt, REP_SERVER, struct.pack(">I", 0))
                self._reply(conn, opt, REP_ACK)
            elif opt in (OPT_INFO, OPT_GO):
                if length < 6:
                    self._reply(conn, opt, REP_ERR_INVALID)
                    continue
                info = struct.pack(">HQH", INFO_EXPORT, self.reader.size, self._tflags())
                self._reply(conn, opt, REP_INFO, info)
                self._reply(conn, opt, REP_ACK)
                if opt == OPT_GO:
                    return True
            else:  # STARTTLS, structured replies, metadata contexts, anything newer
                self._reply(conn, opt, REP_ERR_UNSUP)

    # -- transmission -----------------------------------------------------------------------
    def _transmit(self, conn: socket.socket) -> None:
        size = self.reader.size
        while True:
            magic, _flags, cmd, handle, offset, length = struct.unpack(">IHHQQI", _recv(conn, 28))
            if magic != REQUEST_MAGIC:
                return
            if cmd == CMD_DISC:
                return
            if cmd == CMD_READ:
                if length > MAX_READ or offset + length > size:
                    conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, errno.EINVAL, handle))
                    continue
                with self._lock:
                    data = self.reader.read(offset, length)
                conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, 0, handle) + data)
            elif cmd == CMD_FLUSH:
                conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, 0, handle))
            else:  # write, trim, write-zeroes: this export is read-only
                if cmd == 1:
                    _recv_discard(conn, length)
                conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, errno.EPERM, handle))


def _recv_discard(conn: socket.socket, n: int) -> None:
    while n > 0:
        n -= len(_recv(conn, min(n, 1 << 20)))
