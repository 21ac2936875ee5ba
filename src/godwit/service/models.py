"""The API's own bodies: requests, and the results of operations (the views of what is stored
come from ``godwit.state``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from godwit.state.appliances import ApplianceView
from godwit.state.tokens import TokenView

#: A folder under the service's export directory: one plain name, never a path.
FOLDER = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Request(_Body):
    """A request body: strict, so `0` is not taken for `false` nor `"1"` for a number."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ErrorBody(_Body):
    error: str
    hint: str | None = None


class Health(_Body):
    status: Literal["ok"]
    version: str


class ReplicationChange(_Request):
    enabled: bool


class ReplicationView(_Body):
    server: str
    state: str
    last_cycle: int | None
    open_cycle: int | None
    rpo_seconds: float | None
    latest_recovery_point: int | None
    throughput_bps: float | None


class CycleResultView(_Body):
    server: str
    number: int
    kind: str
    consistency: str
    resumed: bool
    packs_uploaded: int
    packs_reused: int
    bytes_read: int
    bytes_changed: int
    bytes_sent: int
    t_read: float
    t_cpu: float
    t_upload: float
    t_throttle: float
    t_wall: float
    warnings: list[str]
    disks: list[dict[str, int]]


class RecoveryPointView(_Body):
    number: int
    sealed: float
    consistency: str
    disk_sizes: list[int]


class TestMigrationRequest(_Request):
    recovery_point: str = Field("latest", pattern=r"^(latest|[0-9]{1,18})$")
    format: Literal["raw", "vhd", "qcow2"] = "raw"
    folder: str | None = Field(None, pattern=FOLDER, description="under the service's export directory")


class PlannedMigrationRequest(_Request):
    format: Literal["raw", "vhd", "qcow2"] = "raw"
    folder: str | None = Field(None, pattern=FOLDER, description="under the service's export directory")
    final_cycle_timeout: float = Field(3600, gt=0, le=86400, description=(
        "for a server an appliance replicates: seconds to wait for the appliance's final cycle"))


class MigrationResultView(_Body):
    server: str
    kind: str
    recovery_point: int
    format: str
    files: list[str]
    seconds: float


class CleanupResult(_Body):
    removed: list[str]


class TokenRequest(_Request):
    name: str = Field(pattern=NAME)
    role: Literal["reader", "operator", "admin"]
    expires_in_days: float | None = Field(None, gt=0, lt=36500)


class RegistrationRequest(_Request):
    name: str = Field(pattern=NAME)
    key: str = Field(max_length=128)
    servers: list[str] = Field(default_factory=list, max_length=1000)


class Registration(_Body):
    appliance: ApplianceView
    token: TokenView
    secret: str


OperationKind = Literal["enable", "cycle", "test", "cleanup", "planned"]
OperationState = Literal["queued", "running", "succeeded", "failed"]


class OperationError(_Body):
    """Why an operation failed: the GodwitError's message and hint, its class and CLI exit code."""

    error: str
    hint: str | None = None
    type: str = Field(description="the error's class, e.g. ConflictError; `Interrupted` for a service that died")
    exit_code: int


class OperationView(_Body):
    """A long operation run in the service's background (`202 Accepted` answers with one)."""

    id: int
    kind: OperationKind
    server: str
    state: OperationState
    progress: float | None = Field(description="0..1 while a cycle reads; 1 when it succeeded")
    result: CycleResultView | MigrationResultView | CleanupResult | None = Field(
        description="enable: the initial cycle (none if one was committed); cycle: the cycle; test, planned: "
                    "the migration; cleanup: the files removed")
    error: OperationError | None
    created: float
    started: float | None
    finished: float | None
