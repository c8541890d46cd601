"""Alembic's environment: migrations run on the connection storage/migrate.py hands over (under
its lock), never on a URL of their own."""

from __future__ import annotations

from alembic import context

from lingshu_server.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
