"""`godwit appliance run` on the control plane's route: the service over HTTPS through the project's
proxy (tinyproxy on loopback), the cache store (Azurite) direct by the bypass list."""

from __future__ import annotations

import json
import os
import re
import ssl
import stat
import subprocess
import sys
from pathlib import Path

from tests.appliance.site import appliance_project, points, queue, registration_key
from tests.azurite import Azurite, AzuriteTLS
from tests.netservers import Tinyproxy
from tests.network.project import toml_table
from tests.service.harness import create_token, make_project, running, wait_for


def _azure_cache(project: Path, az: Azurite, container: str) -> None:
    cfg = project / "godwit.toml"
    text = re.sub(r"(?ms)^\[cache\]\n.*?(?=^\[)", "", cfg.read_text())
    cfg.write_text(text + "\n" + toml_table("cache", {"kind": "azure", "pack_size_mib": 4,
                                                       **az.options(container)}))


def _run(folder: Path, config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "godwit", "appliance", "run", "--config", str(config), "--once",
                           "-p", str(folder)], capture_output=True, text=True, timeout=120, check=False, env=env)


def test_control_traffic_takes_the_proxy_and_data_does_not(tmp_path: Path, azurite: Azurite,
                                                           azure_container: str, azurite_tls: AzuriteTLS) -> None:
    svc_project = make_project(tmp_path, None, servers=("web",))
    _azure_cache(svc_project, azurite, azure_container)
    key = registration_key(svc_project)
    operator = create_token(svc_project, "op", "operator")
    cert = azurite_tls.ca.issue_cert("127.0.0.2")  # the service has a host of its own: the bypass is by host
    cert_pem, key_pem = tmp_path / "svc-cert.pem", tmp_path / "svc-key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    proxy = Tinyproxy(tmp_path / "proxy")
    proxy.start()
    try:
        folder = appliance_project(tmp_path, svc_project, extra_toml="\n" + toml_table(
            "network", {"proxy": proxy.url, "bypass": ["127.0.0.1"]}))
        _azure_cache(folder, azurite, azure_container)
        verify = ssl.create_default_context(cafile=str(azurite_tls.ca_file))
        with running(svc_project, "--host", "127.0.0.2", "--cert", str(cert_pem), "--key", str(key_pem),
                     "--mover-interval", "0.2", verify=verify) as svc:
            config = tmp_path / "appliance.toml"
            config.write_text(toml_table("appliance", {
                "service": svc.url, "name": "site-a", "servers": ["web"], "key_env": "GODWIT_TEST_REG_KEY",
                "ca_bundle": str(azurite_tls.ca_file), "poll_seconds": 1}))
            env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
            env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")  # ignored: never read
            first = _run(folder, config, dict(env, GODWIT_TEST_REG_KEY=key))
            assert first.returncode == 0, first.stderr
            token = folder / "state" / "appliance" / "token"
            secret = json.loads(token.read_text())["secret"]
            assert stat.S_IMODE(token.stat().st_mode) == 0o600
            assert secret not in first.stdout + first.stderr and key not in first.stdout + first.stderr

            queue(svc, operator, "site-a", "web")
            second = _run(folder, config, env)  # no key now: the saved token serves
            assert second.returncode == 0, second.stderr
            assert "web: cycle 1 committed" in second.stderr and "web: cycle 1 reported" in second.stderr
            wait_for(lambda: points(svc, operator, "web") == [1], what="recovery point 1")
            replica = next((svc_project / "replicas").glob("web-*/disk0-*.img"))
            assert replica.read_bytes() == (tmp_path / "web.raw").read_bytes()
            service_port = svc.url.rsplit(":", 1)[1]
        connects = proxy.connects()
        assert f"127.0.0.2:{service_port}" in connects  # every call to the service went by the proxy
        assert not [c for c in connects if c != f"127.0.0.2:{service_port}"], connects  # the data did not
    finally:
        proxy.close()
