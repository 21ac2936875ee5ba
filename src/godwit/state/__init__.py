"""Project state: servers, disks, cycles, recovery points, events (SQLAlchemy Core; SQLite by
default, PostgreSQL when scaled out)."""

from godwit.state.db import StateDB

__all__ = ["StateDB"]
