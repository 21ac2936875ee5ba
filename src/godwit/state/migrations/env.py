"""Alembic environment: godwit runs migrations in-process on the connection it already has."""

from __future__ import annotations

from alembic import context

from godwit.state.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
