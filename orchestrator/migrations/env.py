"""Alembic's entry point: runs the revisions on the connection that ``migrate`` hands over."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from orchestrator.storage.schema import Base, UtcDateTime


def _render_item(kind: str, item: Any, _context: AutogenContext) -> str | Literal[False]:
    # Revisions must not import the application's types: they would change under old revisions.
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "run the registry's migrations through orchestrator.storage.migrate, which passes the "
        "connection; plain `alembic` command lines are not configured"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    render_item=_render_item,
)
with context.begin_transaction():
    context.run_migrations()
