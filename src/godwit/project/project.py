"""A godwit project: a folder with godwit.toml, the state database, the cache and replicas."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from godwit.config import model as configmod
from godwit.config.model import Config
from godwit.config.schedule import BandwidthSchedule
from godwit.errors import ConflictError, GodwitError, ProjectError, StoreError, UsageError
from godwit.network.route import Router, router_for
from godwit.replicas.base import ReplicaDisk
from godwit.replicas.open import open_replica
from godwit.state import StateDB
from godwit.state.db import Disk, Server
from godwit.stores.base import ObjectStore
from godwit.stores.throttle import ThrottledStore, TokenBucket

CONFIG_NAME = "godwit.toml"
STORE_CONFIG_KEY = "godwit-store.json"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")  # \Z: "$" would accept a trailing newline


def default_path() -> Path:
    return Path(os.environ.get("GODWIT_PROJECT") or ".")


@dataclass
class Project:
    root: Path
    config: Config
    db: StateDB
    _store: ObjectStore | None = field(default=None, repr=False)
    max_mbps_override: float | None = None
    bucket: TokenBucket | None = None
    _store_id: str | None = field(default=None, repr=False)
    _router: Router | None = field(default=None, repr=False)

    # -- paths -------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def hashes_dir(self) -> Path:
        return self.state_dir / "hashes"

    @property
    def snapshots_dir(self) -> Path:
        return self.state_dir / "snapshots"

    @property
    def replicas_dir(self) -> Path:
        return (self.root / self.config.replicas.path).resolve()

    @property
    def cache_dir(self) -> Path:
        return (self.root / self.config.cache.path).resolve()

    # -- the network plane and the cache store --------------------------------------------------

    @property
    def router(self) -> Router | None:
        """The routing decision for every Azure request (``[network]``); None without that table."""
        if self._router is None:
            url = self.config.cache.options.get("account_url") if self.config.cache.kind == "azure" else None
            self._router = router_for(self.config.network, url if isinstance(url, str) else None,
                                      on_change=lambda change: self.db.event(
                                          "error" if change.problems else "warning", change.describe()))
        return self._router

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            from godwit.stores.open import open_store

            raw = open_store(self.config.cache, self.root, self.router)
            schedule = BandwidthSchedule.parse(self.config.replication.throttle.max_mbps,
                                               self.config.replication.throttle.schedule)

            def rate() -> float | None:
                if self.max_mbps_override is not None:
                    return self.max_mbps_override
                from datetime import datetime

                return schedule.mbps_at(datetime.now())

            self.bucket = TokenBucket(rate)
            self._store = ThrottledStore(raw, self.bucket)
        return self._store

    def store_id(self) -> str:
        """The cache store's identity, created with the first object (any store kind)."""
        from godwit.errors import ObjectExistsError, ObjectMissingError

        if self._store_id is not None:
            return self._store_id
        try:
            raw = self.store.get(STORE_CONFIG_KEY)
        except ObjectMissingError:
            # A new id only for a store without godwit objects: in one that holds a layout, a new id
            # would make every committed cycle look copied in from another store.
            if self._holds_servers():
                raise StoreError(f"{STORE_CONFIG_KEY} is missing from {self.store.description}, which holds "
                                 "godwit objects", hint=f"restore {STORE_CONFIG_KEY} from a backup; godwit will "
                                 "not make a new id for a store in use") from None
            doc = {"format": 1, "id": secrets.token_hex(16), "created": time.time()}
            with contextlib.suppress(ObjectExistsError):  # another process made it first: read theirs
                self.store.put(STORE_CONFIG_KEY, json.dumps(doc).encode(), overwrite=False)
            raw = self.store.get(STORE_CONFIG_KEY)
        try:
            doc = json.loads(raw)
            if doc.get("format") != 1:
                raise StoreError(f"{STORE_CONFIG_KEY} has format {doc.get('format')!r}; this godwit reads 1",
                                 hint="upgrade godwit")
            self._store_id = str(doc["id"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StoreError(f"{STORE_CONFIG_KEY} in the cache store is damaged",
                             hint="restore it from a backup; godwit will not guess the store's id") from None
        return self._store_id

    def _holds_servers(self) -> bool:
        try:
            return next(iter(self.store.list("servers/")), None) is not None
        except GodwitError:
            return False  # cannot be listed (no container yet): no evidence of a layout

    def replica(self, server: Server, disk: Disk) -> ReplicaDisk:
        """The replica of one disk, as `[replicas]` configures it, checked against the state's
        recovery points (a replica of another history is refused, never used)."""
        points = [rp.number for rp in self.db.recovery_points(server.id)]
        newest = max((c.number for c in self.db.cycles(server.id)), default=0)
        return open_replica(self.config.replicas, self.root, server, disk, state_points=points,
                            newest_cycle=newest, router=self.router)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        self.db.close()


def init(root: Path, name: str | None = None, *, state_url: str | None = None) -> Project:
    """Create a project; ``state_url`` is written to ``[state] url`` (default: SQLite in state/)."""
    root = Path(root)
    cfg_path = root / CONFIG_NAME
    if name is not None and not NAME_RE.match(name):
        raise UsageError(f"project name {name[:80]!r} is not valid",
                         hint="1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    try:
        if cfg_path.exists():
            raise ConflictError(f"{root} is already a godwit project", hint="use it, or pick another folder")
        name = name or root.resolve().name
        if not NAME_RE.match(name):
            name = "godwit"  # a folder name that is no valid project name: the default, not an error
        text = configmod.DEFAULT_TOML.format(name=name)
        if state_url:
            text += f"\n[state]\nurl = {json.dumps(state_url)}\n"  # a JSON string is a TOML basic string
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "cache", "replicas"):
            (root / sub).mkdir(exist_ok=True)
        cfg_path.write_text(text)
    except OSError as exc:
        raise ProjectError(f"cannot create a project in {root}: {exc.strerror}") from None
    project = open_project(root)
    if project.config.cache.kind == "local":
        project.store_id()  # azure: made on first use, once the account is configured
    return project


def state_url(root: Path, cfg: Config, override: str | None = None) -> str:
    """Which state database: ``--database-url`` / $GODWIT_DATABASE_URL, then ``[state] url``, then
    the SQLite file in the project's state folder."""
    return (override or os.environ.get("GODWIT_DATABASE_URL") or cfg.state.url
            or f"sqlite:///{(root / 'state' / 'godwit.db').resolve()}")


def holds_data(root: Path, cfg: Config) -> bool:
    """Whether the project already has cycles, replicas or block hashes somewhere: then a missing
    or empty state database is a loss to restore, not a fresh start."""
    def nonempty(d: Path) -> bool:
        try:
            return d.is_dir() and any(d.iterdir())
        except OSError:
            return True  # cannot tell: assume the worst
    if nonempty(root / "state" / "hashes") or (cfg.replicas.kind == "local"
                                               and nonempty((root / cfg.replicas.path).resolve())):
        return True
    if cfg.cache.kind == "local":
        return nonempty((root / cfg.cache.path).resolve() / "servers")
    try:
        from godwit.stores.open import open_store

        store = open_store(cfg.cache, root)
        try:
            return next(iter(store.list("servers/")), None) is not None
        finally:
            store.close()
    except GodwitError:
        return False  # no container yet, a bad [cache] or no network: the local evidence above decides


def open_project(root: Path | None = None, *, database_url: str | None = None) -> Project:
    root = Path(root) if root is not None else default_path()
    cfg_path = root / CONFIG_NAME
    try:
        found = cfg_path.is_file()
    except OSError as exc:  # a name too long, a loop of links
        raise ProjectError(f"cannot open a project at {root}: {exc.strerror}") from None
    if not found:
        raise ProjectError(f"no godwit project at {root.resolve()} ({CONFIG_NAME} not found)",
                           hint="run `godwit init PATH`, or pass --project / set GODWIT_PROJECT")
    cfg = configmod.load(cfg_path)
    (root / "state").mkdir(exist_ok=True)
    db = StateDB(state_url(root, cfg, database_url), may_create=lambda: not holds_data(root, cfg))
    return Project(root.resolve(), cfg, db)
