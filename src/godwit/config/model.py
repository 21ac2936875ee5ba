"""godwit.toml: the project's configuration, validated once when the project opens.

Unknown keys are errors (a typo must not silently fall back to a default). Secrets never live
here: credentials are named by reference (an environment variable or a file).
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from godwit.config.network import NetworkConfig, parse_network
from godwit.errors import ConfigError

HASH_ALGORITHMS = ("xxh3-128", "blake3")
TRACKERS = ("scan", "bitmap")


def _take(section: dict[str, Any], name: str, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if key not in section:
        return default
    value = section.pop(key)
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"[{name}] {key} must be {_kind_name(kind)}, got {value!r}"[:200])
    if not isinstance(value, kind):
        raise ConfigError(f"[{name}] {key} must be {_kind_name(kind)}, got {value!r}"[:200])
    if isinstance(value, str) and "\x00" in value:  # no path, name or URL holds a NUL byte
        raise ConfigError(f"[{name}] {key} contains a NUL character")
    return value


def _path(section: dict[str, Any], name: str, default: str) -> str:
    value: str = _take(section, name, "path", str, default)
    if not value.strip():
        raise ConfigError(f"[{name}] path is empty", hint=f'leave it out for the default ("{default}")')
    return value


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The table ``[name]`` (empty when absent); any other TOML value there is an error."""
    value = data.pop(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table, got {value!r}"[:200],
                          hint=f"write it as a section: [{name}] on its own line, then key = value lines")
    return dict(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                        "dict": "a table"}.get(k.__name__, k.__name__) for k in kinds)


def _no_leftovers(section: dict[str, Any], name: str) -> None:
    if section:
        keys = ", ".join(sorted(section))
        raise ConfigError(f"unknown key(s) in [{name}]: {keys}", hint="see docs/configuration.md")


@dataclass
class CacheConfig:
    kind: str = "local"
    path: str = "cache"
    pack_size_mib: int = 32
    #: Kind-specific settings (for example Azure's account URL and credential reference),
    #: validated by the store factory for that kind.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ThrottleConfig:
    max_mbps: float | None = None
    schedule: dict[str, float] = field(default_factory=dict)
    zone: str | None = None  # IANA name; windows are in its local time (default: the host's)
    blackout: list[str] = field(default_factory=list)
    scoped: dict[str, dict[str, Any]] = field(default_factory=dict)  # server:NAME / wave:NAME → table


#: The most disks in flight that godwit.toml may ask for (Forklift's recommended ceiling).
PARALLEL_DISKS_MAX = 200


def default_parallel_disks() -> int:
    """Two disks per core (a cycle waits on reads and uploads as much as it hashes), at least two,
    at most the reference appliance's 52."""
    return max(2, min(52, 2 * (os.cpu_count() or 1)))


@dataclass
class ReplicationConfig:
    tracker: str = "scan"
    block_size_kib: int = 64
    hash: str = "xxh3-128"
    compression_level: int = 1
    upload_concurrency: int = 4
    interval_seconds: int = 300
    #: Disks whose cycles `replicate run` runs at once (a server's cycle counts all its disks).
    parallel_disks: int = field(default_factory=default_parallel_disks)
    #: After a failed cycle the server waits this long, doubled per consecutive failure ...
    error_backoff_seconds: float = 15.0
    #: ... up to this.
    error_backoff_max_seconds: float = 900.0
    #: A due cycle that waited this long is served before any other (None: max(interval, 60 s)).
    starve_after_seconds: float | None = None
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)

    @property
    def block_size(self) -> int:
        return self.block_size_kib * 1024


@dataclass
class ReplicaConfig:
    kind: str = "local"
    path: str = "replicas"
    keep_recovery_points: int = 3
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StateConfig:
    url: str = ""  # empty: SQLite file state/godwit.db inside the project


@dataclass
class Config:
    name: str = "godwit"
    cache: CacheConfig = field(default_factory=CacheConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    replicas: ReplicaConfig = field(default_factory=ReplicaConfig)
    state: StateConfig = field(default_factory=StateConfig)
    #: The state/gateway storage account (Azure's ``gwsa…``): kind-specific, validated by its user.
    gateway: dict[str, Any] = field(default_factory=dict)
    network: NetworkConfig = field(default_factory=NetworkConfig)


def parse(data: dict[str, Any], root: Path | None = None) -> Config:
    """``root`` is the project folder, for relative paths (the current folder when None)."""
    data = dict(data)
    cfg = Config()
    project = _table(data, "project")
    cfg.name = _take(project, "project", "name", str, cfg.name)
    fmt = _take(project, "project", "format", int, 1)
    if fmt != 1:
        raise ConfigError(f"godwit.toml format {fmt} is not supported by this godwit (it reads format 1)",
                          hint="upgrade godwit")
    _no_leftovers(project, "project")

    cache = _table(data, "cache")
    c = cfg.cache
    c.kind = _take(cache, "cache", "kind", str, c.kind)
    if c.kind not in ("local", "azure"):
        raise ConfigError(f"[cache] kind {c.kind!r} is unknown", hint='use "local" or "azure"')
    c.path = _path(cache, "cache", c.path)
    c.pack_size_mib = _take(cache, "cache", "pack_size_mib", int, c.pack_size_mib)
    if not 1 <= c.pack_size_mib <= 1024:
        raise ConfigError("[cache] pack_size_mib must be between 1 and 1024")
    c.options = cache  # the rest belongs to the store kind
    if c.kind == "local":
        _no_leftovers(cache, "cache")

    rep = _table(data, "replication")
    r = cfg.replication
    r.tracker = _take(rep, "replication", "tracker", str, r.tracker)
    if r.tracker not in TRACKERS:
        raise ConfigError(f"[replication] tracker {r.tracker!r} is unknown", hint=f"use one of {TRACKERS}")
    r.block_size_kib = _take(rep, "replication", "block_size_kib", int, r.block_size_kib)
    if r.block_size_kib < 4 or r.block_size_kib > 4096 or r.block_size_kib & (r.block_size_kib - 1):
        raise ConfigError("[replication] block_size_kib must be a power of two from 4 to 4096")
    r.hash = _take(rep, "replication", "hash", str, r.hash)
    if r.hash not in HASH_ALGORITHMS:
        raise ConfigError(f"[replication] hash {r.hash!r} is unknown", hint=f"use one of {HASH_ALGORITHMS}")
    r.compression_level = _take(rep, "replication", "compression_level", int, r.compression_level)
    if not -5 <= r.compression_level <= 19:
        raise ConfigError("[replication] compression_level must be between -5 and 19 (zstd)")
    r.upload_concurrency = _take(rep, "replication", "upload_concurrency", int, r.upload_concurrency)
    if not 1 <= r.upload_concurrency <= 64:
        raise ConfigError("[replication] upload_concurrency must be between 1 and 64")
    r.interval_seconds = _take(rep, "replication", "interval_seconds", int, r.interval_seconds)
    if not 1 <= r.interval_seconds <= 7 * 86400:
        raise ConfigError("[replication] interval_seconds must be between 1 and 604800 (a week)")
    r.parallel_disks = _take(rep, "replication", "parallel_disks", int, r.parallel_disks)
    if not 1 <= r.parallel_disks <= PARALLEL_DISKS_MAX:
        raise ConfigError(f"[replication] parallel_disks must be between 1 and {PARALLEL_DISKS_MAX}, "
                          f"not {r.parallel_disks}",
                          hint=f"leave it out for the default of this machine ({default_parallel_disks()})")
    r.error_backoff_seconds = float(_take(rep, "replication", "error_backoff_seconds", (int, float),
                                          r.error_backoff_seconds))
    if not 1 <= r.error_backoff_seconds <= 3600:
        raise ConfigError("[replication] error_backoff_seconds must be between 1 and 3600")
    r.error_backoff_max_seconds = float(_take(rep, "replication", "error_backoff_max_seconds", (int, float),
                                              r.error_backoff_max_seconds))
    if not r.error_backoff_seconds <= r.error_backoff_max_seconds <= 86400:
        raise ConfigError("[replication] error_backoff_max_seconds must be between error_backoff_seconds "
                          f"({r.error_backoff_seconds:g}) and 86400 (a day)")
    starve = _take(rep, "replication", "starve_after_seconds", (int, float), None)
    if starve is not None and not 1 <= starve <= 7 * 86400:
        raise ConfigError("[replication] starve_after_seconds must be between 1 and 604800 (a week)")
    r.starve_after_seconds = float(starve) if starve is not None else None
    throttle = _take(rep, "replication", "throttle", dict, {})
    t = r.throttle
    t.max_mbps = _take(throttle, "replication.throttle", "max_mbps", (int, float), None)
    t.schedule = _take(throttle, "replication.throttle", "schedule", dict, {})
    t.zone = _take(throttle, "replication.throttle", "zone", str, None)
    t.blackout = _take(throttle, "replication.throttle", "blackout", list, [])
    for kind in ("servers", "waves"):  # per-server and per-wave caps and blackouts (config.windows)
        for name, table in _take(throttle, "replication.throttle", kind, dict, {}).items():
            t.scoped[f"{kind[:-1]}:{name}"] = table if isinstance(table, dict) else {"?": table}
    _no_leftovers(throttle, "replication.throttle")
    _no_leftovers(rep, "replication")
    from godwit.config.schedule import BandwidthSchedule
    from godwit.config.windows import calendar

    BandwidthSchedule.parse(t.max_mbps, t.schedule)  # validates
    calendar(t.zone, t.max_mbps, t.schedule, list(t.blackout), t.scoped)  # and the zone, blackouts, scopes

    replicas = _table(data, "replicas")
    rp = cfg.replicas
    rp.kind = _take(replicas, "replicas", "kind", str, rp.kind)
    if rp.kind not in ("local", "azure"):
        raise ConfigError(f"[replicas] kind {rp.kind!r} is unknown", hint='use "local" or "azure"')
    rp.path = _path(replicas, "replicas", rp.path)
    rp.keep_recovery_points = _take(replicas, "replicas", "keep_recovery_points", int,
                                    rp.keep_recovery_points)
    if not 1 <= rp.keep_recovery_points <= 100:
        raise ConfigError("[replicas] keep_recovery_points must be between 1 and 100")
    rp.options = replicas
    if rp.kind == "local":
        _no_leftovers(replicas, "replicas")

    state = _table(data, "state")
    cfg.state.url = _take(state, "state", "url", str, "")
    _no_leftovers(state, "state")
    cfg.gateway = _table(data, "gateway")
    cfg.network = parse_network(data.pop("network", None), root or Path("."))
    _no_leftovers(data, "top level")
    return cfg


MAX_CONFIG_BYTES = 1 << 20


def _read_config(path: Path) -> bytes:
    """The file's bytes: a regular file (a FIFO would block, /dev/zero never end), at most 1 MiB."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is {st.st_size} bytes; a godwit.toml is far smaller",
                              hint="see docs/configuration.md")
        return os.read(fd, MAX_CONFIG_BYTES)
    finally:
        os.close(fd)


def load(path: Path) -> Config:
    try:
        raw = _read_config(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", hint="run `godwit init PATH` to create a project") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse(data, path.parent)


DEFAULT_TOML = """\
# godwit project configuration. Every key is optional; the values shown are the defaults.
[project]
name = "{name}"
format = 1

[cache]
kind = "local"          # "local" (a folder) or "azure" (a blob container)
path = "cache"          # relative to the project folder
pack_size_mib = 32      # target size of a pack object

[replication]
tracker = "scan"        # change tracking: "scan" (re-hash blocks) or "bitmap" (QEMU dirty bitmaps)
block_size_kib = 64
hash = "xxh3-128"       # or "blake3"
compression_level = 1   # zstd level
upload_concurrency = 4
interval_seconds = 300  # `godwit replicate run` starts a delta cycle this often
# parallel_disks = 4    # disks in flight at once in `replicate run` (default: 2 per core, 2 to 52)

[replication.throttle]
# max_mbps = 100        # cap on the data plane, megabits per second
# schedule = {{ "08:00-18:00" = 50 }}   # business hours get less

[replicas]
kind = "local"
path = "replicas"
keep_recovery_points = 3
"""
