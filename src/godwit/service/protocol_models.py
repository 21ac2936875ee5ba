"""Bodies of the appliance protocol (routers/appliance_protocol.py); the appliance sends and
validates the same models, so both sides cannot drift."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from godwit.service.models import NAME
from godwit.state.appliances import ApplianceView

UID = r"^[0-9a-f]{1,32}$"
BIG = 1 << 62  # any count of bytes or seconds fits far below this
#: ``final`` is queued by a planned migration only (the service waits for its cycle).
CommandKind = Literal["cycle", "stop", "resync", "final"]
OperatorCommandKind = Literal["cycle", "stop", "resync"]


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Request(_Body):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# -- what the service tells an appliance -------------------------------------------------------

class DesiredDisk(_Body):
    index: int
    uid: str
    spec: str = Field(description="the disk as the appliance reads it (path or NBD URL)")
    format: str
    size: int


class DesiredServer(_Body):
    name: str
    uid: str
    replicate: bool = Field(description="whether the appliance should run cycles of this server")
    last_cycle: int | None = Field(description="the highest cycle number the service has of this server")
    accepted: int | None = Field(description="the latest cycle the next report must build on")
    latest_recovery_point: int | None
    final: bool = Field(False, description="a planned migration waits for this server's final cycle: run no "
                                          "scheduled cycle of it, only the `final` command")
    disks: list[DesiredDisk]


class CommandView(_Body):
    id: int
    server: str
    kind: CommandKind
    created: float
    done: float | None
    result: str | None


class DesiredState(_Body):
    appliance: str
    store_id: str = Field(description="the cache store the service's mover reads; the appliance must write there")
    interval_seconds: float
    max_mbps: float | None
    last_event: int = Field(description="the last of the appliance's event ids the service has stored")
    servers: list[DesiredServer]
    commands: list[CommandView] = Field(description="commands not yet done, oldest first")


# -- what an appliance tells the service -------------------------------------------------------

class CycleDiskReport(_Request):
    index: int = Field(ge=0, le=255)
    size: int = Field(ge=0, lt=BIG)
    bytes_read: int = Field(ge=0, lt=BIG)
    bytes_changed: int = Field(ge=0, lt=BIG)
    bytes_sent: int = Field(ge=0, lt=BIG)
    extents: int = Field(ge=0, lt=BIG)


class CycleReport(_Request):
    """A cycle the appliance committed: its manifest (and packs) are in the cache store, its block
    hashes at ``hashes/`` keys beside them."""

    server: str = Field(pattern=NAME)
    number: int = Field(ge=1, lt=1 << 31)
    parent: int | None = Field(ge=1, lt=1 << 31)
    kind: Literal["initial", "delta", "final"]
    consistency: Literal["crash", "none"]
    manifest_key: str = Field(max_length=200)
    started: float = Field(ge=0, lt=1e12)
    committed: float = Field(ge=0, lt=1e12)
    packs: int = Field(ge=0, lt=BIG)
    bytes_read: int = Field(ge=0, lt=BIG)
    bytes_changed: int = Field(ge=0, lt=BIG)
    bytes_sent: int = Field(ge=0, lt=BIG)
    t_read: float = Field(ge=0, lt=1e9)
    t_cpu: float = Field(ge=0, lt=1e9)
    t_upload: float = Field(ge=0, lt=1e9)
    t_throttle: float = Field(ge=0, lt=1e9)
    t_wall: float = Field(ge=0, lt=1e9)
    disks: list[CycleDiskReport] = Field(max_length=256)


class CycleAccepted(_Body):
    server: str
    number: int
    duplicate: bool = Field(description="true when this very report had been accepted before")


class ProgressReport(_Request):
    server: str = Field(pattern=NAME)
    cycle: int | None = Field(None, ge=1, lt=1 << 31)
    bytes_done: int = Field(0, ge=0, lt=BIG)
    bytes_total: int = Field(0, ge=0, lt=BIG)
    throughput_bps: float | None = Field(None, ge=0, lt=1e15)
    rpo_seconds: float | None = Field(None, ge=0, lt=1e12)
    error: str | None = Field(None, max_length=2000)


class ProgressView(_Body):
    server: str
    cycle: int | None
    bytes_done: int
    bytes_total: int
    throughput_bps: float | None
    rpo_seconds: float | None
    error: str | None
    updated: float


class EventReport(_Request):
    id: int = Field(ge=1, lt=BIG, description="the event's id in the appliance's own state")
    ts: float = Field(ge=0, lt=1e12)
    level: Literal["info", "warning", "error"]
    message: str = Field(max_length=2000)
    server: str | None = Field(None, pattern=NAME)
    cycle: int | None = Field(None, ge=0, lt=1 << 31)


class EventBatch(_Request):
    events: list[EventReport] = Field(max_length=500)


class EventsStored(_Body):
    last_event: int


class CommandDone(_Request):
    result: str = Field(max_length=2000)


# -- what operators ask ------------------------------------------------------------------------

class CommandRequest(_Request):
    server: str = Field(pattern=NAME)
    kind: OperatorCommandKind


class ApplianceSettingsRequest(_Request):
    interval_seconds: float | None = Field(None, gt=0, lt=366 * 86400, description="null: the project's")
    max_mbps: float | None = Field(None, gt=0, lt=1e7, description="null: the project's throttle")


class ApplianceSettingsView(_Body):
    interval_seconds: float | None
    max_mbps: float | None


class Unregistered(_Body):
    appliance: ApplianceView = Field(description="the appliance as it was")
    stopped: list[str] = Field(description="its servers whose replication was stopped here")
