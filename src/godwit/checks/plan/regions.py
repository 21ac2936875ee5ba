"""The region → BGP community table shipped with godwit (data/bgp_communities.json).

The table is Microsoft's (its source and date are in the file and in every plan that uses it):
Microsoft tags the routes it advertises on Microsoft peering with a community per region, and a
route filter that allows a community lets those prefixes reach the circuit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from godwit.errors import UsageError


@dataclass(frozen=True)
class Region:
    key: str  # Azure's name: westeurope
    name: str  # as the table writes it: West Europe
    cloud: str  # public, usgov, china
    community: str  # the regional community (Microsoft peering)
    storage_community: str | None


@dataclass(frozen=True)
class Cloud:
    key: str
    blob_suffix: str  # core.windows.net
    entra_id: str | None  # the Microsoft Entra ID (Azure Active Directory) community


@dataclass(frozen=True)
class Source:
    title: str
    url: str
    page_date: str
    retrieved: str

    def line(self) -> str:
        return f"{self.title} ({self.url}, page of {self.page_date}, read {self.retrieved})"


@cache
def _table() -> dict[str, Any]:
    raw = resources.files("godwit.checks.plan").joinpath("data", "bgp_communities.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(raw)
    return data


def source() -> Source:
    s = _table()["source"]
    return Source(s["title"], s["url"], s["page_date"], s["retrieved"])


def cloud(key: str) -> Cloud:
    c = _table()["clouds"][key]
    return Cloud(key, c["blob_suffix"], c["entra_id"])


def regions() -> dict[str, Region]:
    return {k: Region(k, v["name"], v["cloud"], v["microsoft_peering"], v["storage"])
            for k, v in _table()["regions"].items()}


def lookup(option: str, key: str) -> Region:
    """The region named ``key`` (Azure's name, or the table's, in any case and spacing)."""
    table = regions()
    if key in table:
        return table[key]
    squashed = key.replace(" ", "").lower()
    for r in table.values():
        if r.name.replace(" ", "").lower() == squashed:
            return r
    raise UsageError(f"{option} {key!r} is not in godwit's BGP community table",
                     hint=f"use an Azure region name such as westeurope; the table ({source().url}) "
                          "lists the regions whose Microsoft peering routes carry a regional community")


def cloud_of_suffix(blob_suffix: str) -> Cloud | None:
    for key in _table()["clouds"]:
        c = cloud(key)
        if c.blob_suffix == blob_suffix:
            return c
    return None
