"""`godwit network plan`, checked by the real Azure CLI rather than by eye.

The generated script runs under bash with ``az`` replaced by a recorder (so bash does the quoting and
the guards decide what runs); every recorded command then goes through the Azure CLI's own parser,
all of them in one process of the CLI's own venv (.tools/azcli, installed on first use). Without a
login a command whose arguments parse fails with "az login" (exit 1); bad arguments fail at parse
time (exit 2) or in the CLI's argument validation (another exit-1 message) — both are failures here.
Bicep files and role definitions are compared with golden files (GODWIT_UPDATE_GOLDEN=1 rewrites).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from godwit import __version__
from godwit.checks.plan import PlanOptions, ProjectView, make_plan, names, project_view, regions
from godwit.checks.plan.render_bicep import literal
from godwit.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "network-plan"
AZURE_CLI = "azure-cli>=2.60,<3"
SUB = "11111111-2222-3333-4444-555555555555"

CONFIG = """\
[cache]
kind = "azure"
account_url = "https://lsacache01.blob.core.windows.net"
container = "godwit"
credential = { kind = "default" }

[gateway]
account_url = "https://gwsastate01.blob.core.windows.net"
container = "state"
credential = { kind = "default" }
"""
PROJECT = ProjectView("https://lsacache01.blob.core.windows.net", "https://gwsastate01.blob.core.windows.net")

# name → (options, project view): the plans every test below looks at.
CASES: dict[str, tuple[PlanOptions, ProjectView]] = {
    "pe-zone-group": (PlanOptions(mode="private-endpoint", subscription=SUB, resource_group="rg-migrate",
                                  location="westeurope", vnet="vnet-hub", subnet="snet-pe",
                                  network_resource_group="rg-network", forwarder_ip="10.20.0.4"), PROJECT),
    # Shell-special characters that Azure allows in a resource group name, and a Unicode letter.
    "pe-a-record": (PlanOptions(mode="private-endpoint", subscription=SUB, resource_group="rg(prod).mig_ü",
                                location="North Europe", vnet="vnet.hub_", subnet="s", dns="a-record",
                                endpoint_name="pe_cache"), PROJECT),
    "mp": (PlanOptions(mode="microsoft-peering", subscription=SUB, resource_group="rg-migrate",
                       circuit="er-ams", circuit_resource_group="rg-er", source_region="West Europe",
                       target_region="northeurope", communities=("12076:5070",)), PROJECT),
    "mp-no-gateway": (PlanOptions(mode="microsoft-peering", subscription=SUB, resource_group="rg",
                                  account="lsaother9", circuit="c1", source_region="eastus",
                                  target_region="eastus"), ProjectView()),
}

# Run inside the Azure CLI's venv: each argv through get_default_cli().invoke, stderr captured at
# the file-descriptor level (the CLI's log handlers keep the stream they first saw).
PARSE = textwrap.dedent("""
    import io, json, os, sys, tempfile
    from azure.cli.core import get_default_cli
    results, saved = [], os.dup(2)
    for argv in json.load(sys.stdin):
        with tempfile.TemporaryFile() as tmp:
            sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            try:
                try:
                    rc = get_default_cli().invoke(argv, out_file=io.StringIO())
                except SystemExit as exc:
                    rc = exc.code
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
            tmp.seek(0)
            results.append({"rc": rc, "stderr": tmp.read().decode(errors="replace")})
    json.dump(results, sys.stdout)
""")

RECORDER = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["AZ_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")
if "--query" in args:
    print(json.loads(os.environ["AZ_ANSWERS"]).get(args[args.index("--query") + 1], ""))
"""
# What a fresh account answers (every guarded step runs) and what a ready one answers (none does).
NEEDS_ALL = {"kind": "Storage", "publicNetworkAccess": "Disabled", "[0].id": "",
             "customDnsConfigs[0].ipAddresses[0]": "10.1.0.5"}
READY = {"kind": "StorageV2", "publicNetworkAccess": "Enabled", "[0].id": "/providers/x/roleDefinitions/1",
         "customDnsConfigs[0].ipAddresses[0]": "10.1.0.5"}


@pytest.fixture(scope="session")
def azcli() -> Path:
    """The Azure CLI's python, in a venv of its own (it pins its own azure-* packages)."""
    venv = Path(os.environ.get("GODWIT_AZCLI") or ROOT / ".tools" / "azcli")
    stamp = venv / ".godwit-installed"  # written last: a half-made venv is made again
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Test runs that share .tools wait for one another rather than rebuild a venv in use.
    with open(venv.parent / ".azcli.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == AZURE_CLI and python.exists()):
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
            subprocess.run([str(python), "-m", "pip", "install", "-q", AZURE_CLI], check=True, timeout=1500)
            stamp.write_text(AZURE_CLI)
    return python


def az_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("AZURE_", "HTTP", "NO_PROXY"))}
    env.update(AZURE_CONFIG_DIR=str(tmp / "azconfig"), AZURE_CORE_COLLECT_TELEMETRY="no",
               AZURE_EXTENSION_USE_DYNAMIC_INSTALL="no", AZURE_CORE_NO_COLOR="true",
               # Nothing may leave this machine: any request the CLI tried would hit a dead port.
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    return env


def parse_all(python: Path, commands: list[list[str]], tmp: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([str(python), "-c", PARSE], input=json.dumps(commands), capture_output=True, text=True,
                          env=az_env(tmp), timeout=300, check=True)
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def run_script(script: str, tmp: Path, answers: dict[str, str], *args: str) -> list[list[str]]:
    """Run a generated script under bash with `az` recorded; the argument vectors bash passed."""
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    recorder = bindir / "az"
    recorder.write_text(RECORDER.format(python=sys.executable))
    recorder.chmod(0o755)
    log = tmp / f"az-{len(list(tmp.glob('az-*.log')))}.log"
    path = tmp / "plan.sh"
    path.write_text(script)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "AZ_LOG": str(log),
           "AZ_ANSWERS": json.dumps(answers)}
    subprocess.run(["bash", str(path), *args], env=env, check=True, timeout=60)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def plan(name: str, fmt: str) -> str:
    opts, view = CASES[name]
    return make_plan(opts, view, fmt)


def test_every_generated_command_parses_in_the_real_azure_cli(azcli: Path, tmp_path: Path) -> None:
    commands: list[list[str]] = []
    for name in CASES:
        script = plan(name, "az")
        ran = run_script(script, tmp_path, NEEDS_ALL)
        role = run_script(script, tmp_path, NEEDS_ALL, "--create-role")
        # Creating the role is a run of its own (the operator holding only the role cannot read roles).
        assert {c[0] for c in role} == {"role"} and "role" not in {c[0] for c in ran}
        commands += role + ran
        # The guards: on a ready account nothing is upgraded, re-enabled or re-created.
        ready = run_script(script, tmp_path, READY) + run_script(script, tmp_path, READY, "--create-role")
        assert [c for c in ready if c[:2] in (["storage", "account"], ["role", "definition"]) and
                c[2] in ("update", "create")] == []
        assert len(ready) < len(ran) + len(role)
    verbs = {" ".join(c[:4]) for c in commands}
    for expected in ("storage account update --subscription", "network private-endpoint create",
                     "network private-dns zone", "network private-endpoint dns-zone-group",
                     "network private-dns record-set", "network route-filter rule", "network express-route peering",
                     "role definition create --subscription"):
        assert any(v.startswith(expected) for v in verbs), (expected, verbs)
    broken = ["network", "private-endpoint", "create", "--name", "pe", "--resource-group", "rg", "--no-such-flag"]
    results = parse_all(azcli, [*commands, broken], tmp_path)
    # The harness can fail: a bad argument is refused at parse time.
    assert results[-1]["rc"] == 2, results[-1]
    for argv, result in zip(commands, results, strict=False):
        assert result["rc"] == 1 and "az login" in result["stderr"], (shlex.join(["az", *argv]), result)


def test_values_reach_azure_intact_through_bash(tmp_path: Path) -> None:
    ran = run_script(plan("pe-a-record", "az"), tmp_path, NEEDS_ALL)
    ran += run_script(plan("pe-a-record", "az"), tmp_path, NEEDS_ALL, "--create-role")
    groups = {c[c.index("--resource-group") + 1] for c in ran if "--resource-group" in c}
    assert groups == {"rg(prod).mig_ü"}
    record = next(c for c in ran if c[:5] == ["network", "private-dns", "record-set", "a", "add-record"])
    assert record[record.index("--ipv4-address") + 1] == "10.1.0.5"  # the captured address, one word
    role = next(c for c in ran if c[:3] == ["role", "definition", "create"])
    doc = json.loads(role[role.index("--role-definition") + 1])
    assert doc["AssignableScopes"] == [f"/subscriptions/{SUB}/resourceGroups/rg(prod).mig_ü"]


def test_gateway_account_gets_no_private_endpoint_and_the_plan_says_so(tmp_path: Path) -> None:
    for name in ("pe-zone-group", "mp"):
        ran = run_script(plan(name, "az"), tmp_path, NEEDS_ALL)
        assert not any("gwsastate01" in arg for c in ran for arg in c)
        for fmt in ("az", "bicep"):
            text = plan(name, fmt)
            assert "gateway account gwsastate01 gets NO private endpoint" in text
            assert "public endpoint stays enabled" in text
    same = make_plan(PlanOptions(**{**CASES["pe-zone-group"][0].__dict__, "gateway_account": "lsacache01"}), PROJECT)
    assert "WARNING: [gateway] names the cache account lsacache01 itself" in same
    text = plan("pe-zone-group", "az")
    assert "Never bypass *.blob.core.windows.net" in text
    assert "conditional forwarder for blob.core.windows.net to 10.20.0.4" in text


def test_route_filter_communities(tmp_path: Path) -> None:
    ran = run_script(plan("mp", "az"), tmp_path, NEEDS_ALL)
    rule = next(c for c in ran if c[:4] == ["network", "route-filter", "rule", "create"])
    assert rule[rule.index("--communities") + 1:] == ["12076:51002", "12076:51003", "12076:5060", "12076:5070"]
    attach = next(c for c in ran if c[:4] == ["network", "express-route", "peering", "update"])
    assert attach[attach.index("--name") + 1] == "MicrosoftPeering"
    assert attach[attach.index("--route-filter") + 1].endswith("/routeFilters/rf-godwit-lsacache01")
    same = run_script(plan("mp-no-gateway", "az"), tmp_path, NEEDS_ALL)
    rule = next(c for c in same if c[:4] == ["network", "route-filter", "rule", "create"])
    assert rule[rule.index("--communities") + 1:] == ["12076:51004", "12076:5060"]
    assert "page of 2026-03-12" in plan("mp", "az")  # the table's source and date travel with the plan


@pytest.mark.parametrize(("name", "fmt", "file"), [
    ("pe-zone-group", "az", "pe-zone-group.sh"), ("pe-zone-group", "bicep", "pe-zone-group.bicep"),
    ("pe-a-record", "bicep", "pe-a-record.bicep"), ("mp", "az", "mp.sh"), ("mp", "bicep", "mp.bicep"),
    ("pe-zone-group", "role", "pe.role.json"), ("mp", "role", "mp.role.json"),
])
def test_golden(name: str, fmt: str, file: str) -> None:
    text = plan(name, fmt).replace(f"godwit {__version__}", "godwit VERSION")
    golden = GOLDEN / file
    if os.environ.get("GODWIT_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"{file} changed: review, then GODWIT_UPDATE_GOLDEN=1"


def test_role_is_least_privilege() -> None:
    pe, mp = json.loads(plan("pe-zone-group", "role")), json.loads(plan("mp", "role"))
    for doc in (pe, mp):
        assert all("*" not in a or a == "Microsoft.Network/privateDnsZones/A/*" for a in doc["Actions"])
        assert "Microsoft.Storage/storageAccounts/write" not in doc["Actions"]
        assert all(s.startswith(f"/subscriptions/{SUB}/resourceGroups/") for s in doc["AssignableScopes"])
    assert "Microsoft.Network/privateEndpoints/write" in pe["Actions"]
    assert not any("routeFilters" in a for a in pe["Actions"])
    assert not any("privateEndpoints" in a for a in mp["Actions"])


def _bicep_unquote(text: str) -> tuple[str, str]:
    """Read one Bicep string literal from the start of ``text``: (value, what follows it)."""
    assert text[0] == "'"
    out, i = [], 1
    simple = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "$": "$"}
    while text[i] != "'":
        if text[i] == "\\":
            if text[i + 1] == "u":
                end = text.index("}", i)
                out.append(chr(int(text[i + 3:end], 16)))
                i = end + 1
                continue
            out.append(simple[text[i + 1]])
            i += 2
            continue
        assert text[i:i + 2] != "${", "an interpolation would run"
        out.append(text[i])
        i += 1
    return "".join(out), text[i + 1:]


@pytest.mark.parametrize("hostile", ["x' }\nresource evil 'x' = {", "${subscription().id}", "a\\'b", "\x00\x1b[31m",
                                     "'", "\\", "$", "ü' // "])
def test_bicep_literal_cannot_be_escaped(hostile: str) -> None:
    value, rest = _bicep_unquote(literal(hostile) + " // after")
    assert value == hostile and rest == " // after"
    assert "\n" not in literal(hostile)


HOSTILE = ["rg; rm -rf /", "$(touch /tmp/pwned)", "`id`", "a'b", 'a"b', "x\ny", "x\n", "-rf", "a b", "", "[bold]x",
           "é" * 91]
OPTIONS = {"--resource-group": "resource_group", "--vnet": "vnet", "--subnet": "subnet",
           "--endpoint-name": "endpoint_name", "--network-resource-group": "network_resource_group",
           "--subscription": "subscription", "--account": "account", "--location": "location",
           "--forwarder-ip": "forwarder_ip", "--dns": "dns", "--mode": "mode"}


@pytest.mark.parametrize("option", OPTIONS)
def test_hostile_values_are_refused(option: str) -> None:
    opts, view = CASES["pe-zone-group"]
    for value in HOSTILE:
        if option.endswith("resource-group") and value == "-rf":
            continue  # a valid resource group name (quoted in the output like any other)
        with pytest.raises(UsageError) as caught:
            make_plan(PlanOptions(**{**opts.__dict__, OPTIONS[option]: value}), view)
        assert caught.value.hint and "\n" not in caught.value.message.replace(repr(value), "")
        assert option in caught.value.message


@pytest.mark.parametrize("value", ["rg; rm -rf /", "[bold]x\n"])
def test_hostile_value_on_the_command_line(value: str, tmp_path: Path) -> None:
    out = tmp_path / "plan.sh"
    proc = subprocess.run([sys.executable, "-m", "godwit", "network", "plan", "--out", str(out), "--mode",
                           "private-endpoint", "--subscription", SUB, "--resource-group", value, "--account", "lsa01",
                           "--location", "westeurope", "--vnet", "vnet", "--subnet", "snet"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"godwit: error: --resource-group {value!r} is not a valid resource group name\n")
    assert "hint: " in proc.stderr and "Traceback" not in proc.stderr and not out.exists()


def test_microsoft_peering_options_are_checked() -> None:
    opts, view = CASES["mp"]
    for changes, match in (({"circuit": "c;x"}, "--circuit"), ({"route_filter": "rf$"}, "--route-filter"),
                           ({"circuit_resource_group": "a b"}, "--circuit-resource-group"),
                           ({"source_region": "atlantis"}, "--source-region 'atlantis' is not in godwit's"),
                           ({"target_region": "usgovvirginia"}, "usgov cloud but the cache account is in public"),
                           ({"target_region": "usgovvirginia", "location": "westeurope"}, "different clouds"),
                           ({"communities": ("12076:99999",)}, "not a BGP community"),
                           ({"communities": ("12076:1\n",)}, "not a BGP community"),
                           ({"mode": "internet"}, "--mode 'internet' is not a plan")):
        with pytest.raises(UsageError, match=re.escape(match)):
            make_plan(PlanOptions(**{**opts.__dict__, **changes}), view)


def test_cli_reads_the_project_and_refuses_a_hostile_account_url(tmp_path: Path) -> None:
    (tmp_path / "godwit.toml").write_text(CONFIG)
    out = tmp_path / "plan.bicep"
    base = [sys.executable, "-m", "godwit", "network", "plan", "--project", str(tmp_path), "--mode",
            "private-endpoint", "--subscription", SUB, "--resource-group", "rg-migrate", "--location", "westeurope",
            "--vnet", "vnet-hub", "--subnet", "snet-pe", "--network-resource-group", "rg-network",
            "--forwarder-ip", "10.20.0.4"]
    proc = subprocess.run([*base, "--format", "bicep", "--out", str(out)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == plan("pe-zone-group", "bicep")
    again = subprocess.run([*base, "--format", "bicep", "--out", str(out)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 5 and "exists" in again.stderr  # never overwritten without --force
    script = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and script.stdout == plan("pe-zone-group", "az")

    (tmp_path / "godwit.toml").write_text(CONFIG.replace("lsacache01.blob", "lsa$(id).blob"))
    proc = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "storage account name" in proc.stderr and "Traceback" not in proc.stderr


def test_network_table_drives_the_plan_when_present() -> None:
    # The shape of godwit.config's [network] table: read when the configuration has one.
    config = SimpleNamespace(
        cache=SimpleNamespace(kind="azure", options={"account_url": "https://lsacache01.blob.core.windows.net"}),
        gateway={"account_url": "https://gwsastate01.blob.core.windows.net"},
        network=SimpleNamespace(data_plane="microsoft-peering", source_region="westeurope",
                                target_region="uksouth", route_filter_communities=("12076:5070", "12076:5060")))
    text = make_plan(PlanOptions(subscription=SUB, resource_group="rg", circuit="c1"), project_view(config))
    assert "--communities 12076:51002 12076:51024 12076:5060 12076:5070" in text
    assert "mode microsoft-peering from [network] data_plane" in text
    assert "--location uksouth" in text
    local = SimpleNamespace(cache=SimpleNamespace(kind="local", options={}), gateway={})
    with pytest.raises(UsageError, match="no cache account"):
        make_plan(PlanOptions(mode="private-endpoint", subscription=SUB, resource_group="rg"), project_view(local))


def test_community_table() -> None:
    table = regions.regions()
    assert table["westeurope"].community == "12076:51002" and table["eastus"].community == "12076:51004"
    assert regions.cloud("public").entra_id == "12076:5060"
    for key, region in table.items():
        assert names.REGION.pattern.fullmatch(key) and regions.lookup("--x", region.name) == region
        assert names.community("--x", region.community) == region.community
        assert region.storage_community is None or region.storage_community == region.community.replace(":51", ":52")
    src = regions.source()
    assert src.url.startswith("https://learn.microsoft.com/") and src.page_date and src.retrieved
    # Sovereign clouds: the account's endpoint suffix follows the region's cloud.
    china = make_plan(PlanOptions(mode="microsoft-peering", subscription=SUB, resource_group="rg", account="lsa01",
                                  circuit="c", source_region="chinanorth", target_region="chinaeast2"), ProjectView())
    assert "lsa01.blob.core.chinacloudapi.cn" in china and "publishes no Microsoft Entra ID community" in china
