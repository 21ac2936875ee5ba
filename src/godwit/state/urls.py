"""State database URLs: which ones godwit takes, with which driver, and how they are shown.

SQLite (the embedded default) and PostgreSQL through psycopg 3 are the two supported databases.
``postgresql://`` and ``postgres://`` mean psycopg 3 (SQLAlchemy alone would pick psycopg2, which
godwit does not ship); any other driver or scheme is refused before anything is imported, so a
wrong URL is a one-line ConfigError, never a traceback.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from godwit.errors import ConfigError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_EXAMPLE = "postgresql+psycopg://USER@HOST:5432/DATABASE, or sqlite:////path/to/godwit.db"


def parse(url: str) -> URL:
    """The SQLAlchemy URL for ``url``, with godwit's driver; ConfigError for anything else."""
    try:
        u = make_url(url.strip())
    except (ArgumentError, ValueError):
        raise ConfigError(f"the state database URL {redact(url)!r} is not a URL",
                          hint=f"write it as {_EXAMPLE}") from None
    backend, _, driver = u.drivername.partition("+")
    if backend == "postgres":
        backend = POSTGRESQL
    if backend == SQLITE:
        if driver not in ("", "pysqlite"):
            raise ConfigError(f"SQLite driver {driver!r} is not supported", hint="write sqlite:///PATH")
        return u.set(drivername=SQLITE)
    if backend == POSTGRESQL:
        if driver not in ("", "psycopg"):
            raise ConfigError(f"PostgreSQL driver {driver!r} is not supported (godwit uses psycopg 3)",
                              hint=f"write the URL as {_EXAMPLE.split(',')[0]}")
        try:
            import psycopg  # noqa: F401  # a clear error now rather than a traceback from the pool
        except ImportError:
            raise ConfigError("the PostgreSQL driver psycopg 3 is not installed",
                              hint="pip install 'psycopg[binary]>=3.1,<4' into godwit's environment") from None
        return u.set(drivername=f"{POSTGRESQL}+psycopg")
    raise ConfigError(f"state database {backend!r} is not supported (in {redact(url)!r})",
                      hint=f"use SQLite (the default) or PostgreSQL: {_EXAMPLE}")


def redact(url: str | URL) -> str:
    """The URL without its password, for messages and logs."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url.split("@")[-1] if "@" in url else url


def backend(u: URL) -> str:
    return u.get_backend_name()
