"""The bypass matcher: exact names, wildcards, the article's regexes, case, dots, ports, IPs, and
hostile patterns that must not hang godwit (the matcher is a linear-time automaton)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from godwit.config.hostpattern import MAX_PATTERN, PatternError, compile_pattern
from godwit.config.network import parse_bypass_entry
from godwit.errors import ConfigError
from godwit.network.bypass import BypassList

label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=5).map(".".join)


def random_case(data: st.DataObject, text: str) -> str:
    flips = data.draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flips, strict=True))


def bypass(*entries: str) -> BypassList:
    return BypassList.parse(entries)


# -- exact names ----------------------------------------------------------------------------------

@given(hostname, st.data())
def test_exact_name_matches_itself_in_any_case_with_or_without_trailing_dot(host: str, data: st.DataObject) -> None:
    rules = bypass(host)
    assert rules.bypasses(random_case(data, host))
    assert rules.bypasses(host + ".")
    assert bypass(host.upper() + ".").bypasses(host)


@given(hostname, label)
def test_exact_name_matches_the_whole_name_only(host: str, extra: str) -> None:
    rules = bypass(host)
    assert not rules.bypasses(f"{extra}.{host}")  # a subdomain is another host
    assert not rules.bypasses(f"{host}.{extra}")  # so is a longer name with it as prefix
    assert not rules.bypasses(f"{extra}{host}")


# -- wildcards ----------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["*.blob.core.windows.net", ".*.blob.core.windows.net", "*.BLOB.core.windows.net."])
@given(sub=st.lists(label, min_size=1, max_size=3).map(".".join), data=st.data())
def test_wildcards_match_every_name_under_the_domain(entry: str, sub: str, data: st.DataObject) -> None:
    rules = bypass(entry)
    assert rules.bypasses(random_case(data, f"{sub}.blob.core.windows.net"))
    assert not rules.bypasses("blob.core.windows.net")  # the domain itself is not under it
    assert not rules.bypasses(f"{sub}blob.core.windows.net")  # no label boundary
    assert not rules.bypasses(f"{sub}.blob.core.windows.net.evil.example")


def test_the_article_form_is_a_wildcard_with_literal_dots() -> None:
    entry = parse_bypass_entry(".*.blob.core.windows.net")
    assert entry.kind == "wildcard" and entry.name == "blob.core.windows.net"
    rules = bypass(".*.blob.core.windows.net")
    assert rules.bypasses("lsacontoso01.blob.core.windows.net")
    assert rules.bypasses("gwsacontoso01.blob.core.windows.net")  # why the article warns against it
    assert not rules.bypasses("lsa1.blobxcore.windows.net")


# -- regular expressions ------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, yes, no", [
    (r"lsa[0-9]+\.blob\.core\.windows\.net", ["lsa42.blob.core.windows.net", "LSA7.Blob.Core.Windows.Net."],
     ["gwsa42.blob.core.windows.net", "lsa.blob.core.windows.net", "lsa42.blob.core.windows.net.evil.com"]),
    (r".*\.backup\.windowsazure\.com", ["x.backup.windowsazure.com"], ["backup.windowsazure.com"]),
    (r"^(lsa|cache)[a-z0-9]{1,22}\.blob\.core\.windows\.net$", ["cache01.blob.core.windows.net"],
     ["gwsa01.blob.core.windows.net"]),
    (r"[^.]+\.servicebus\.windows\.net", ["ns.servicebus.windows.net"], ["a.b.servicebus.windows.net"]),
])
def test_regexes_match_the_whole_name_case_insensitively(pattern: str, yes: list[str], no: list[str]) -> None:
    rules = bypass(pattern)
    assert parse_bypass_entry(pattern).kind == "regex"
    for host in yes:
        assert rules.bypasses(host), host
    for host in no:
        assert not rules.bypasses(host), host


_atom = st.sampled_from(["a", "b", "-", r"\.", ".", "[ab]", "[^.]", "[a-c]", r"\d", "[.-]"])


def _regexes() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}|{t[1]})"),
            st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{0,2}", "{1,}", "*?"])).map(
                lambda t: f"(?:{t[0]}){t[1]}"),
        )
    return st.recursive(_atom, extend, max_leaves=6)


@settings(max_examples=400, deadline=None)
@given(_regexes(), st.text(alphabet="abAB.-1", max_size=10))
def test_the_matcher_agrees_with_pythons_re_on_its_dialect(pattern: str, host: str) -> None:
    expected = re.fullmatch(pattern, host, re.IGNORECASE) is not None
    assert compile_pattern(pattern).fullmatch(host) == expected


# -- ports and IP literals ----------------------------------------------------------------------

def test_ports_apply_only_to_that_port() -> None:
    rules = bypass("lsa1.blob.core.windows.net:443", "*.corp.example:8443", ".*.example.net:443")
    assert rules.bypasses("x.example.net", 443) and not rules.bypasses("x.example.net", 80)
    assert rules.bypasses("lsa1.blob.core.windows.net", 443)
    assert not rules.bypasses("lsa1.blob.core.windows.net", 10000)
    assert rules.bypasses("a.corp.example", 8443) and not rules.bypasses("a.corp.example", 443)


def test_ip_literals_and_cidrs_match_ip_hosts_only() -> None:
    rules = bypass("10.1.0.5", "192.168.0.0/16", "[fd00::5]:443", "::1")
    assert rules.bypasses("10.1.0.5") and not rules.bypasses("10.1.0.6")
    assert rules.bypasses("192.168.44.2")
    assert rules.bypasses("[FD00::5]", 443) and not rules.bypasses("[fd00::5]", 80)
    assert rules.bypasses("[::1]")
    assert not bypass("10.1.0.5").bypasses("10.1.0.5.nip.example")
    assert not bypass("localhost").bypasses("127.0.0.1")


def test_star_bypasses_everything_and_first_match_is_reported() -> None:
    rules = bypass("*.blob.core.windows.net", "*")
    assert rules.match("x.blob.core.windows.net") == parse_bypass_entry("*.blob.core.windows.net")
    assert rules.match("login.microsoftonline.com") == parse_bypass_entry("*")
    assert bypass().match("anything") is None


@pytest.mark.parametrize("entry, match", [
    ("", "non-empty"), ("a b", "spaces"), (".blob.core.windows.net", "ambiguous"), ("10.1.0.5/24", "host bits"),
    ("exa mple", "spaces"), ("bad_-.", "not a valid host name"), ("host:99999", "port"), ("*.", "valid domain"),
    ("(a", "missing"), ("a)", "unbalanced"), (r"(?=a)b", "look-arounds"), (r"(a)\1", "escape"), ("a**", "quantifier"),
    ("x" * (MAX_PATTERN + 1) + "*", "at most"), ("(a{255}){255}", "too complex"), (r"\bword", "escape"),
])
def test_bad_entries_are_config_errors(entry: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_bypass_entry(entry)


# -- hostile patterns ---------------------------------------------------------------------------

HOSTILE = [r"(a+)+$", r"(a|a)*b", r"(a|aa)+c", r"(.*a){20}", r"((a*)*)*c", r"(a*)*b", r"(?:a?){30}a{30}",
           r"(\w+\d*)+x", r"([a-z]+-?)*\.example"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pattern", HOSTILE)
def test_catastrophic_backtracking_patterns_answer_at_once(pattern: str) -> None:
    rules = bypass(pattern)
    host = "a" * 240 + "!"
    start = time.perf_counter()
    assert not rules.bypasses(host)
    assert not rules.bypasses("a" * 60 + "-" * 60)
    assert time.perf_counter() - start < 3.0  # Python's re takes longer than the universe's age here


@pytest.mark.timeout(60)
@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="a(|)*+?{}2,.\\[]^-", max_size=40), st.text(alphabet="a-.", max_size=200))
def test_any_pattern_is_refused_or_answers_quickly(pattern: str, host: str) -> None:
    try:
        compiled = compile_pattern(pattern)
    except PatternError:
        return
    start = time.perf_counter()
    compiled.fullmatch(host)
    assert time.perf_counter() - start < 2.0  # linear: milliseconds; a backtracking engine: hours
