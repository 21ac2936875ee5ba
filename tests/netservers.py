"""Real network services on loopback for the network-plane tests: dnsmasq and tinyproxy.

Each is started on 127.0.0.1 (or another 127.0.0.x) and a free port, by the test that needs it,
and stopped by it (``close``). dnsmasq answers only what the test gives it (``--no-resolv``,
``--no-hosts``), like an Azure private DNS zone: ``cname`` for the account's name to its
privatelink name, and an A record in a hosts file that ``set_records`` rewrites and reloads
(SIGHUP), so a test can change the answer mid-run. tinyproxy logs every CONNECT it serves.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.azurite import _die_with_parent


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if path is None:
        pytest.fail(f"{binary} is not installed: apt-get install {package}", pytrace=False)
    return path


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Dnsmasq:
    workdir: Path
    address: str = "127.0.0.1"
    cnames: dict[str, str] = field(default_factory=dict)
    #: Domains answered only from the records (NXDOMAIN / NODATA otherwise), as a DNS zone would.
    local_domains: tuple[str, ...] = ("example", "windows.net", "invalid", "test")
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def hosts_file(self) -> Path:
        return self.workdir / "dns-records"

    def set_records(self, records: dict[str, list[str]]) -> None:
        """Replace the A/AAAA records (name -> addresses) and make dnsmasq reload them."""
        self.hosts_file.write_text("".join(f"{a} {name}\n" for name, addrs in records.items() for a in addrs))
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)

    def start(self, records: dict[str, list[str]]) -> None:
        """Start on ``port`` (or a free one: a port free for UDP may be taken for TCP by another
        process, so a failed start on a chosen port is retried on another)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.set_records(records)
        fixed = self.port
        for attempt in range(5):
            self.port = fixed or free_port(self.address, socket.SOCK_DGRAM)
            if self._start_once(last=bool(fixed) or attempt == 4):
                return

    def _start_once(self, *, last: bool) -> bool:
        args = [_need("dnsmasq", "dnsmasq"), "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", "--bind-interfaces", f"--listen-address={self.address}", f"--port={self.port}",
                f"--addn-hosts={self.hosts_file}", "--pid-file=", "--user=root", "--local-ttl=0",
                "--log-facility=-", "--log-queries"]
        args += [f"--cname={alias},{target}" for alias, target in self.cnames.items()]
        args += [f"--local=/{domain}/" for domain in self.local_domains]
        log = open(self.workdir / "dnsmasq.log", "wb")  # noqa: SIM115 - the child keeps it open
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + 10
        while not self._answers():
            exited = self.proc.poll() is not None
            if exited or time.monotonic() > deadline:
                text = (self.workdir / "dnsmasq.log").read_text(errors="replace")[-2000:]
                self.close()
                if exited and not last:  # most likely the port, taken for TCP: try another
                    return False
                pytest.fail(f"dnsmasq did not start:\n{text}", pytrace=False)
            time.sleep(0.05)
        return True

    def _answers(self) -> bool:
        import dns.message
        import dns.query

        try:
            dns.query.udp(dns.message.make_query("probe.invalid", "A"), self.address, port=self.port, timeout=0.3)
        except Exception:
            return False
        return True

    def close(self) -> None:
        _stop(self.proc)
        self.proc = None


@dataclass
class Tinyproxy:
    workdir: Path
    basic_auth: tuple[str, str] | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "tinyproxy.log"

    def connects(self) -> list[str]:
        """The CONNECT requests served so far (``host:port`` each)."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if "Request (file descriptor" in line and "): CONNECT " in line:
                out.append(line.split("): CONNECT ", 1)[1].split()[0])
        return out

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "tinyproxy.conf"
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 30", f"LogFile \"{self.log}\"",
                 "LogLevel Info", "MaxClients 20", "Allow 127.0.0.1", "DisableViaHeader Yes"]
        if self.basic_auth:
            lines.append(f"BasicAuth {self.basic_auth[0]} {self.basic_auth[1]}")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([_need("tinyproxy", "tinyproxy"), "-d", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.3):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail("tinyproxy did not start", pytrace=False)
            time.sleep(0.05)

    def close(self) -> None:
        _stop(self.proc)
        self.proc = None
