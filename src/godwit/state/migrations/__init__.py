"""Alembic migrations of the state database (SQLite and PostgreSQL alike)."""
