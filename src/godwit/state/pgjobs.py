"""What godwit does in PostgreSQL around the mover's job engine (procrastinate, see movers/):
creating the engine's tables once, and a per-server advisory lock held while a job applies.

The engine's own schema is procrastinate's SQL, run here inside one transaction that holds an
advisory lock, so two workers starting together create it once. The version that created it is
kept as the comment of ``procrastinate_jobs``; a database made by another version is refused with
a hint rather than used with functions it may not have.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from godwit.errors import ConfigError, ConflictError
from godwit.state.db import StateDB

#: pg_advisory_xact_lock key of creating the job engine's schema ("godjob" in ASCII); the
#: schema upgrade's key is "godwit" (state/upgrade.py).
PG_JOBS_SCHEMA_LOCK = 0x676F646A6F62
#: First half of the two-int advisory keys of servers being applied (a key space apart from the
#: one-bigint keys above).
PG_APPLY_NAMESPACE = 0x676F64  # "god"

_VERSION = re.compile(r"[0-9A-Za-z.+-]{1,40}\Z")


def _require_postgresql(db: StateDB) -> None:
    if db.backend != "postgresql":
        raise ConfigError(f"the mover's job engine needs PostgreSQL; this project's state is {db.backend}",
                          hint="use --database-url postgresql+psycopg://USER@HOST/DB, or run `godwit mover run`")


def ensure_job_schema(db: StateDB, schema_sql: str, version: str) -> bool:
    """Create the job engine's tables unless they exist; True when this call created them."""
    _require_postgresql(db)
    if not _VERSION.match(version):
        raise ValueError(f"unexpected job engine version {version!r}")
    with db.tx() as c:
        c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_JOBS_SCHEMA_LOCK})
        if c.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None:
            found = c.execute(text("SELECT obj_description('procrastinate_jobs'::regclass, 'pg_class')")).scalar()
            mark = f"procrastinate {version}"
            if found != mark:
                raise ConfigError(f"the job tables in {db.url} were made by {found or 'an unknown version'}, "
                                  f"this godwit runs {mark}",
                                  hint="stop every mover worker, then apply procrastinate's migrations "
                                       "(`procrastinate schema --migrations-path`) or run the same version "
                                       "everywhere")
            return False
        # No bind parameters: the SQL goes to the server as written (it contains '%').
        c.execution_options(no_parameters=True).exec_driver_sql(schema_sql)
        c.exec_driver_sql(f"COMMENT ON TABLE procrastinate_jobs IS 'procrastinate {version}'")
        return True


def _apply_key(server_uid: str) -> int:
    return int.from_bytes(hashlib.sha256(server_uid.encode()).digest()[:4], "big", signed=True)


@contextmanager
def server_apply_lock(db: StateDB, server_uid: str, *, wait: float) -> Iterator[None]:
    """Hold a PostgreSQL session lock for applying ``server_uid`` on a connection of its own.

    The job engine already runs one job per server at a time; this covers the one case it cannot
    see: a worker that lost its heartbeat (so its job was handed on) but still runs. Its session
    keeps the lock until the process or its connection dies, and PostgreSQL drops it then, so a
    ``kill -9`` never leaves it behind. No transaction stays open while it is held.
    """
    _require_postgresql(db)
    key = _apply_key(server_uid)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        deadline = time.monotonic() + wait
        while not c.execute(text("SELECT pg_try_advisory_lock(:n, :k)"), {"n": PG_APPLY_NAMESPACE, "k": key}
                            ).scalar():
            if time.monotonic() >= deadline:
                raise ConflictError(f"another mover session still applies server {server_uid}",
                                    hint="it is retried; a worker that lost its database connection lets go "
                                         "when PostgreSQL drops its session")
            time.sleep(0.2)
        try:
            yield
        finally:
            with suppress(SQLAlchemyError):  # a dead connection has dropped the lock already
                c.execute(text("SELECT pg_advisory_unlock(:n, :k)"), {"n": PG_APPLY_NAMESPACE, "k": key})
