"""A TEST DOUBLE of the QEMU guest agent (qemu-ga): a unix socket that speaks QGA's JSON lines.

It stands in for a real guest, because running qemu-ga's fsfreeze on this host would freeze the
host's own filesystems. It records every command it is sent (``calls``, with the time and
whether the "guest" was frozen), keeps a frozen/thawed state like qemu-ga, and can be told to
hang on ``guest-fsfreeze-freeze`` (``hang_freeze`` seconds before it answers) to test timeouts.
Like qemu-ga, it answers each request in order, echoing the request's ``id``, and serves one
client at a time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any


class FakeGuestAgent:
    def __init__(self, path: Path, *, hang_freeze: float = 0.0, frozen: bool = False) -> None:
        self.path = path
        self.hang_freeze = hang_freeze
        self.frozen = frozen
        self.calls: list[tuple[str, float]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path.unlink(missing_ok=True)
        self._sock.bind(str(path))
        self._sock.listen(1)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-qga")
        self._thread.start()

    def names(self) -> list[str]:
        return [c for c, _ in self.calls]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            decoder = json.JSONDecoder()
            with conn, contextlib.suppress(OSError):
                conn.settimeout(0.2)
                buf = b""
                while not self._stop.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    buf += chunk
                    # Messages arrive back to back, not always one a line (qemu.qmp sends none).
                    while buf.strip():
                        text = buf.decode()
                        try:
                            msg, end = decoder.raw_decode(text.lstrip())
                        except json.JSONDecodeError:
                            break  # incomplete: wait for more
                        buf = text.lstrip()[end:].encode()
                        conn.sendall(json.dumps(self._answer(msg)).encode() + b"\n")

    def _answer(self, msg: dict[str, Any]) -> dict[str, Any]:
        cmd = msg.get("execute", "")
        args = msg.get("arguments") or {}
        self.calls.append((cmd, time.monotonic()))
        ret: Any
        if cmd == "guest-sync":
            ret = args["id"]
        elif cmd == "guest-fsfreeze-status":
            ret = "frozen" if self.frozen else "thawed"
        elif cmd == "guest-fsfreeze-freeze":
            if self.hang_freeze:
                time.sleep(self.hang_freeze)
            self.frozen = True
            ret = 3  # file systems frozen
        elif cmd == "guest-fsfreeze-thaw":
            ret = 3 if self.frozen else 0
            self.frozen = False
        else:
            out: dict[str, Any] = {"error": {"class": "CommandNotFound", "desc": f"command {cmd} not found"}}
            return {**out, "id": msg["id"]} if "id" in msg else out
        return {"return": ret, "id": msg["id"]} if "id" in msg else {"return": ret}

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)
        self.path.unlink(missing_ok=True)
