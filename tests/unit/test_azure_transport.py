"""azure/transport.py without a service: which proxy a request takes, and what the session reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from godwit.azure.settings import AzureSettings, parse_options
from godwit.azure.transport import ProxyRoute, build_transport, proxy_route

BASE = {"account_url": "https://lsaexample.blob.core.windows.net", "container": "godwit-cache",
        "credential": {"kind": "default"}}
URL = "https://lsaexample.blob.core.windows.net/c/b"


def settings(tmp_path: Path, **changes: object) -> AzureSettings:
    return parse_options({**BASE, **changes}, "cache", tmp_path)


def test_the_environment_is_read_explicitly(tmp_path: Path) -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "HTTP_PROXY": "http://plain:3"}
    route = proxy_route(settings(tmp_path), env)
    assert route.for_url(URL) == {"https": "http://lower:2"}  # lowercase wins, as in curl and requests
    assert route.for_url("http://127.0.0.1:10000/acct") == {"http": "http://plain:3"}
    assert proxy_route(settings(tmp_path), {}).for_url(URL) == {}


@pytest.mark.parametrize(("no_proxy", "url", "direct"), [
    ("lsaexample.blob.core.windows.net", URL, True),
    (".core.windows.net", URL, True),
    ("core.windows.net", URL, True),
    ("windows.net.evil", URL, False),
    ("xample.blob.core.windows.net", URL, False),  # a suffix matches at a dot only
    ("LSAEXAMPLE.BLOB.core.windows.net", URL, True),
    ("*", URL, True),
    ("127.0.0.0/8", "https://127.0.0.1:8443/acct", True),
    ("10.0.0.0/8", "https://127.0.0.1:8443/acct", False),
    ("127.0.0.1:8443", "https://127.0.0.1:8443/acct", True),
    ("127.0.0.1:9999", "https://127.0.0.1:8443/acct", False),
    ("other.example, lsaexample.blob.core.windows.net", URL, True),
])
def test_no_proxy(no_proxy: str, url: str, direct: bool, tmp_path: Path) -> None:
    route = proxy_route(settings(tmp_path), {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy})
    assert route.for_url(url) == ({} if direct else {"https": "http://proxy:3128"})


def test_configured_proxy_overrides_the_environment(tmp_path: Path) -> None:
    env = {"HTTPS_PROXY": "http://env:1", "NO_PROXY": "*"}
    assert proxy_route(settings(tmp_path, proxy="none"), env).for_url(URL) == {}
    route = proxy_route(settings(tmp_path, proxy="http://corp-proxy:8080/"), env)
    assert route.for_url(URL) == {"https": "http://corp-proxy:8080"}  # NO_PROXY is the environment's only


@pytest.mark.parametrize(("value", "message"), [
    ("socks5://p:1080", "is not an http"),
    ("http://user:pw@p:3128", "user name or password"),
    ("http://p:3128/path", "only scheme, host and port"),
    ("http://p:99999", "invalid port"),
    (5, "must be a URL"),
    ("", "must be a URL"),
])
def test_bad_proxy_options(value: object, message: str, tmp_path: Path) -> None:
    from godwit.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        settings(tmp_path, proxy=value)


@pytest.mark.parametrize("plane", ["data", "control"])
def test_the_session_never_trusts_the_environment(plane: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    transport = build_transport(plane, settings(tmp_path), pool=3)  # type: ignore[arg-type]
    transport.open()
    try:
        assert transport.session is not None and transport.session.trust_env is False
        assert transport.godwit_plane == plane  # type: ignore[attr-defined]
        adapter = transport.session.get_adapter(URL)
        assert adapter._pool_maxsize == 10  # type: ignore[attr-defined]
    finally:
        transport.close()


def test_an_unknown_plane_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown network plane"):
        build_transport("bulk", settings(tmp_path))  # type: ignore[arg-type]


def test_route_defaults_to_direct() -> None:
    assert ProxyRoute().for_url(URL) == {}
