"""A godwit project whose cache, replicas and gateway live in the namespaces' Azurites, and the
godwit commands run on it from onprem (always a subprocess in ``gw-onprem``: the pytest process
itself sits outside every namespace)."""

from __future__ import annotations

import json
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from godwit.project.project import init
from tests.netns import DNS_SERVER, VENV_BIN, Counters, Topology

MIB = 1 << 20
DATA = 16 * MIB  # random, so zstd cannot shrink it: a full cycle sends at least this much


def toml_table(name: str, values: dict[str, Any]) -> str:
    """One TOML table; nested dicts become inline tables (JSON literals are valid TOML here)."""
    lines = [f"[{name}]"]
    for key, value in values.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def private_endpoint(net: Topology, **override: Any) -> dict[str, Any]:
    """The article's private-peering setup: only the cache account bypasses the proxy."""
    return {"data_plane": "private-endpoint", "proxy": net.proxy_url, "bypass": [net.cache.fqdn],
            "private_cidrs": [net.private_cidr], "dns_servers": [DNS_SERVER], **override}


@dataclass
class NetProject:
    net: Topology
    root: Path
    cache_container: str
    replicas_container: str
    gateway_container: str

    def godwit(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.net.godwit(*args, timeout=timeout, env=self.net.env(GODWIT_PROJECT=str(self.root)))

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return self.net.popen(self.net.onprem, str(VENV_BIN / "godwit"), *args,
                              env=self.net.env(GODWIT_PROJECT=str(self.root)))

    def json(self, *args: str) -> Any:
        proc = self.godwit(*args, "--json")
        assert proc.returncode == 0, f"godwit {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return json.loads(proc.stdout)

    def events_text(self) -> str:
        return json.dumps(self.json("events", "--limit", "200"))

    def gateway_blobs(self) -> dict[str, bytes]:
        """What godwit wrote to the gateway account, read from the internet side."""
        def read(svc: Any) -> dict[str, bytes]:
            container = svc.get_container_client(self.gateway_container)
            return {b.name: container.get_blob_client(b.name).download_blob().readall()
                    for b in container.list_blobs()}

        return self.net.on_account(self.net.gateway, read)


def make_project(net: Topology, root: Path, *, network: dict[str, Any] | None, gateway: bool = True,
                 throttle_mbps: float | None = None) -> NetProject:
    init(root).close()
    cache, replicas = net.new_container(net.cache, "cache"), net.new_container(net.cache, "replicas")
    state = net.new_container(net.gateway, "state")
    text = toml_table("project", {"name": "netproj", "format": 1})
    # Small packs: many requests, as a real cycle makes, and a cycle long enough to change DNS in.
    text += toml_table("cache", {"kind": "azure", "pack_size_mib": 4, **net.account_options(net.cache, cache)})
    text += toml_table("replicas", {"kind": "azure", **net.account_options(net.cache, replicas)})
    if throttle_mbps is not None:
        text += toml_table("replication.throttle", {"max_mbps": throttle_mbps})
    if gateway:
        text += toml_table("gateway", {"kind": "azure", **net.account_options(net.gateway, state)})
    if network is not None:
        text += toml_table("network", network)
    (root / "godwit.toml").write_text(text)
    return NetProject(net, root, cache, replicas, state)


def make_disk(path: Path) -> Path:
    """24 MiB: 16 MiB of random data in one run, then a hole."""
    with open(path, "wb") as f:
        f.truncate(24 * MIB)
        f.seek(4 * MIB)
        f.write(random.Random(5).randbytes(DATA))
    return path


def step(p: NetProject, *args: str) -> Counters:
    """Run one godwit command in onprem; it must succeed. The bytes it moved on each link."""
    before = p.net.link_bytes()
    proc = p.godwit(*args)
    moved = p.net.link_bytes() - before
    assert proc.returncode == 0, f"godwit {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return moved
