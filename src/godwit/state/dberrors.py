"""Database errors, said as godwit errors: a lock held too long names its holder, a damaged
database says to restore it, a row that vanished under a command says so — never a traceback."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

from godwit.errors import ConflictError, GodwitError, ProjectError, UsageError
from godwit.state import holders
from godwit.state.urls import SQLITE, redact

#: PostgreSQL's SQLSTATE for lock_timeout expiring (lock_not_available).
PG_LOCK_NOT_AVAILABLE = "55P03"


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def is_lock_timeout(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.OperationalError):
        return "database is locked" in str(orig) or "database table is locked" in str(orig)
    return getattr(orig, "sqlstate", None) == PG_LOCK_NOT_AVAILABLE


def sqlite_path(url: URL) -> Path | None:
    return Path(url.database) if url.get_backend_name() == SQLITE and url.database not in (None, "", ":memory:") \
        else None


class Translator:
    """Maps SQLAlchemy errors raised by state code to GodwitErrors for one database."""

    def __init__(self, url: URL, busy_timeout: float, pg_holders: Callable[[], list[holders.Holder]]) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self._pg_holders = pg_holders

    def where(self) -> str:
        p = sqlite_path(self.url)
        return str(p) if p is not None else redact(self.url)

    def _holders(self) -> list[holders.Holder]:
        p = sqlite_path(self.url)
        if p is not None:
            return holders.processes_with_open(p)
        try:
            return self._pg_holders()
        except (SQLAlchemyError, OSError):
            return []

    def lock_error(self) -> ConflictError:
        found = self._holders()
        who = "; ".join(h.describe() for h in found[:3]) if found else "not visible from here"
        kind = "processes with it open" if sqlite_path(self.url) is not None else "sessions in a transaction"
        return ConflictError(
            f"the state database {self.where()} stayed locked for more than {self.busy_timeout:.0f}s "
            f"by another process ({kind}: {who})",
            hint="wait for that command to finish, or stop it (a tool such as sqlite3 or psql holding a "
                 "transaction open also blocks godwit); then run the command again")

    def translate(self, exc: SQLAlchemyError) -> GodwitError:
        if isinstance(exc, OperationalError) and is_lock_timeout(exc):
            return self.lock_error()
        if isinstance(exc, IntegrityError):
            return ConflictError(f"the state changed under this command: {_first_line(exc)}",
                                 hint="another godwit command changed the same server at the same time "
                                      "(was it removed?); check `godwit server list` and run the command again")
        if isinstance(exc, DataError):
            return UsageError(f"a value does not fit the state database: {_first_line(exc)}")
        if isinstance(exc, OperationalError):
            return ProjectError(f"cannot use the state database {self.where()}: {_first_line(exc)}",
                                hint="check that the database is reachable and that godwit may write to it")
        if isinstance(exc, DBAPIError):
            return damaged(self.where(), _first_line(exc))
        return ProjectError(f"state database error: {_first_line(exc)}")

    @contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise self.translate(exc) from None
        except OverflowError as exc:  # sqlite3 refuses an int beyond 64 bits before any SQL runs
            raise UsageError(f"a number is too large for the state database ({exc})") from None


def damaged(where: str, detail: str) -> ProjectError:
    return ProjectError(f"the state database {where} is damaged ({detail})",
                        hint="restore it from a backup (with the project stopped); godwit never starts over "
                             "on top of existing cycles and replicas")
