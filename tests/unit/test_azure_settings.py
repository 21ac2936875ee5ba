"""Azure options, credentials by reference and redaction: parsed and checked without a service."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from godwit.azure.credentials import install_log_redaction, redact, register_secret
from godwit.azure.settings import parse_options
from godwit.cli import store_cmd
from godwit.errors import ConfigError, ReplicaError
from godwit.replicas.pageblob import open_pageblob_replica
from godwit.stores.azure import open_azure_store


@pytest.fixture
def restore_log_factory() -> Iterator[None]:
    """install_log_redaction() replaces the process-wide record factory; put it back afterwards."""
    factory = logging.getLogRecordFactory()
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)


# -- configuration -----------------------------------------------------------------------------------------

BASE: dict[str, Any] = {"account_url": "https://lsaexample.blob.core.windows.net", "container": "godwit-cache",
                        "credential": {"kind": "default"}}


def opts(**changes: Any) -> dict[str, Any]:
    out = {**BASE, **changes}
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(("name", "message"), [
    ("ab", "is 2 characters long; it must be 3-63"),
    ("a" * 64, "is 64 characters long; it must be 3-63"),
    ("Godwit", "has uppercase letters"),
    ("godwit_cache", "contains '_'"),
    ("godwit.cache", "contains '.'"),
    ("-godwit", "must start and end with a letter or digit"),
    ("godwit-", "must start and end with a letter or digit"),
    ("godwit--cache", "consecutive hyphens"),
    ("", "must be a name"),
])
def test_container_name_rules(name: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_options(opts(container=name), "cache", tmp_path)


@pytest.mark.parametrize("name", ["abc", "a" * 63, "godwit-cache-01", "0abc"])
def test_container_names_accepted(name: str, tmp_path: Path) -> None:
    assert parse_options(opts(container=name), "cache", tmp_path).container == name


@pytest.mark.parametrize(("url", "account", "normalised"), [
    ("https://lsaexample.blob.core.windows.net", "lsaexample", "https://lsaexample.blob.core.windows.net"),
    ("https://LSAEXAMPLE.blob.core.windows.net/", "lsaexample", "https://lsaexample.blob.core.windows.net"),
    ("https://gwsa01.blob.core.chinacloudapi.cn", "gwsa01", "https://gwsa01.blob.core.chinacloudapi.cn"),
    ("http://127.0.0.1:10000/devstoreaccount1", "devstoreaccount1", "http://127.0.0.1:10000/devstoreaccount1"),
    ("https://127.0.0.1:8443/acct123/", "acct123", "https://127.0.0.1:8443/acct123"),
    ("http://localhost:10000/acct123", "acct123", "http://localhost:10000/acct123"),
])
def test_account_urls(url: str, account: str, normalised: str, tmp_path: Path) -> None:
    s = parse_options(opts(account_url=url), "cache", tmp_path)
    assert (s.account, s.account_url) == (account, normalised)


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://x.blob.core.windows.net", "is not an http"),
    ("lsaexample.blob.core.windows.net", "is not an http"),
    ("https://lsaexample.blob.core.windows.net?sv=1&sig=abc", "must not carry a query"),
    ("https://lsaexample.blob.core.windows.net/cache", "must not have a path"),
    ("https://127.0.0.1:10000", "needs the account as its only path segment"),
    ("https://127.0.0.1:10000/a/b", "needs the account as its only path segment"),
    ("https://storagehost", "is not ACCOUNT.blob"),
    ("https://Bad_Name.blob.core.windows.net", "is not valid"),
    ("https://ab.blob.core.windows.net", "is not valid"),
    ("http://lsaexample.blob.core.windows.net", "plain http"),
    ("https://user:pw@lsaexample.blob.core.windows.net", "user name or password"),
    ("https://lsaexample.blob.core.windows.net:99999", "invalid port"),
    (42, "must be a URL"),
])
def test_bad_account_urls(url: Any, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_options(opts(account_url=url), "cache", tmp_path)


@pytest.mark.parametrize(("changes", "message"), [
    ({"account_url": None}, "needs account_url"),
    ({"container": None}, "needs container"),
    ({"credential": None}, "needs credential"),
    ({"colour": "blue"}, r"unknown key\(s\) in \[cache\]: colour"),
    ({"credential": "secret"}, "must be a table"),
    ({"credential": {"kind": "password"}}, "kind must be one of"),
    ({"credential": {"kind": "sas"}}, "needs exactly one of env or file"),
    ({"credential": {"kind": "sas", "env": "A", "file": "b"}}, "needs exactly one of env or file"),
    ({"credential": {"kind": "sas", "env": "not a name"}}, "must be an environment variable name"),
    ({"credential": {"kind": "default", "env": "X"}}, "takes no env or file"),
    ({"credential": {"kind": "sas", "env": "X", "scope": "y"}}, r"unknown key\(s\) in \[cache\] credential"),
    ({"retries": -1}, "retries must be an integer from 0 to 20"),
    ({"retries": True}, "retries must be"),
    ({"max_concurrency": 0}, "max_concurrency must be"),
    ({"validate_content": "crc32"}, "validate_content must be one of"),
    ({"ca_file": "missing.pem"}, "ca_file .* does not exist"),
])
def test_bad_options(changes: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_options(opts(**changes), "cache", tmp_path)


def test_gateway_takes_no_pack_settings(tmp_path: Path) -> None:
    from godwit.azure.settings import CONNECTION_KEYS

    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[gateway\]: block_size_mib"):
        parse_options(opts(block_size_mib=4), "gateway", tmp_path, allowed=CONNECTION_KEYS)


def test_missing_or_empty_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GODWIT_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError, match=r"environment variable GODWIT_TEST_UNSET .* is not set or empty"):
        open_azure_store(opts(credential={"kind": "sas", "env": "GODWIT_TEST_UNSET"}), tmp_path)
    monkeypatch.setenv("GODWIT_TEST_EMPTY", "  ")
    with pytest.raises(ConfigError, match=r"GODWIT_TEST_EMPTY .* is not set or empty"):
        open_azure_store(opts(credential={"kind": "account_key", "env": "GODWIT_TEST_EMPTY"}), tmp_path)
    with pytest.raises(ConfigError, match=r"credential file .*nope.key does not exist"):
        open_azure_store(opts(credential={"kind": "account_key", "file": "nope.key"}), tmp_path)
    (tmp_path / "empty.key").write_text("\n")
    with pytest.raises(ConfigError, match=r"credential file .*empty.key is empty"):
        open_azure_store(opts(credential={"kind": "account_key", "file": "empty.key"}), tmp_path)
    monkeypatch.setenv("GODWIT_TEST_NOT_SAS", "sv=2020-01-01&se=2030-01-01")
    with pytest.raises(ConfigError, match="has no sig= field"):
        open_azure_store(opts(credential={"kind": "sas", "env": "GODWIT_TEST_NOT_SAS"}), tmp_path)
    monkeypatch.setenv("GODWIT_TEST_OTHER_CONN", "AccountName=someoneelse;AccountKey=c2VjcmV0c2VjcmV0")
    with pytest.raises(ConfigError, match="is for account 'someoneelse', but account_url names 'lsaexample'"):
        open_azure_store(opts(credential={"kind": "connection_string", "env": "GODWIT_TEST_OTHER_CONN"}), tmp_path)


def test_options_dict_is_not_changed(tmp_path: Path) -> None:
    given = opts(retries=2)
    before = json.dumps(given, sort_keys=True)
    parse_options(given, "cache", tmp_path)
    assert json.dumps(given, sort_keys=True) == before


@pytest.mark.parametrize(("changes", "message"), [
    ({"block_size_mib": 4}, r"unknown key\(s\) in \[replicas\]: block_size_mib"),
    ({"container": "Replicas"}, "uppercase"),
])
def test_replica_options(changes: dict[str, Any], message: str, tmp_path: Path) -> None:
    options = {"account_url": "https://lsaexample.blob.core.windows.net", "container": "replicas",
               "credential": {"kind": "default"}, **changes}
    with pytest.raises(ConfigError, match=message):
        open_pageblob_replica(options, tmp_path, "srv-disk0")


def test_replica_name_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ReplicaError, match="not valid"):
        open_pageblob_replica({}, tmp_path, "../escape")


# -- redaction ---------------------------------------------------------------------------------------------

def test_redact_shapes() -> None:
    key = "k3yMaterial0123456789abcdefABCDEF+/=="
    cases = {
        "GET https://a.blob.core.windows.net/c/b?sv=2024&se=2030&sp=r&sig=AbC%2Bd%3D": "sig=AbC%2Bd%3D",
        "sig=plain+sig/=&other=1": "plain+sig/=",
        "'Authorization': 'SharedKey acct:c2lnbmF0dXJl'": "c2lnbmF0dXJl",
        "Authorization: Bearer eyJhbGciOi.payload.sig": "eyJhbGciOi",
        "x-ms-copy-source-authorization: Bearer abcdefgh": "abcdefgh",
        f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={key};EndpointSuffix=x": key,
        "BlobEndpoint=x;SharedAccessSignature=sv=1&sig=zzzzzzzz": "zzzzzzzz",
    }
    for text, secret in cases.items():
        out = redact(text)
        assert secret not in out, out
        assert "REDACTED" in out
    assert redact("nothing secret here: sv=2024&se=2030") == "nothing secret here: sv=2024&se=2030"


def test_registered_secrets_are_redacted_anywhere() -> None:
    secret = "registered-" + os.urandom(8).hex()
    register_secret(secret)
    assert secret not in redact(f"the key is {secret} and again {secret}")


def test_log_redaction_covers_child_loggers_and_exceptions(caplog: pytest.LogCaptureFixture,
                                                           restore_log_factory: None) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    log.info("Request URL: %r", "https://a.blob.core.windows.net/c?sig=TOPSECRETSIG")
    try:
        raise ValueError("failed GET https://x/c?sig=ALSOSECRET")
    except ValueError:
        logging.getLogger("godwit.x").exception("boom")
    assert "TOPSECRETSIG" not in caplog.text and "ALSOSECRET" not in caplog.text
    assert "sig=REDACTED" in caplog.text


# -- godwit store check ----------------------------------------------------------------------------------

def test_store_check_local(tmp_path: Path) -> None:
    from godwit.project.project import init

    init(tmp_path / "p").close()
    result = CliRunner().invoke(store_cmd.app, ["check", "--project", str(tmp_path / "p"), "--json"])
    assert result.exit_code == 0, result.output
    assert [c["name"] for c in json.loads(result.stdout)["checks"]] == ["cache: folder", "cache: writable",
                                                                       "cache: free space"]
