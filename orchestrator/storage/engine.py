"""SQLAlchemy engines for the registry: a SQLite file (the default) or PostgreSQL, by URL.

SQLite is set up for a multi-threaded server: write-ahead logging (readers never wait for the
writer), foreign keys on (SQLite leaves them off), and writes that take the write lock when their
transaction begins (``BEGIN IMMEDIATE``). Without that, two transactions that read and then write
deadlock, and SQLite fails one of them at once with "database is locked" instead of waiting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option that marks a connection whose transactions will write.
WRITE_OPTION = "edgefleet_write"

_SQLITE_DRIVERS = ("pysqlite",)
_POSTGRES_DRIVERS = ("psycopg",)


def sqlite_url(path: Path) -> str:
    """The URL of a SQLite registry file (its folder must exist)."""
    return URL.create("sqlite+pysqlite", database=str(path)).render_as_string()


def create_storage_engine(url: str) -> Engine:
    """An engine for ``url``; ``ValueError`` names what is wrong with an unsupported URL."""
    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        if driver not in _SQLITE_DRIVERS:
            raise ValueError(f"SQLite URLs must use sqlite+pysqlite, got {parsed.drivername}")
        if parsed.database in (None, "", ":memory:"):
            # Each pooled connection would see its own empty database.
            raise ValueError("an in-memory SQLite registry is not supported: give a file path")
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        if driver not in _POSTGRES_DRIVERS:
            raise ValueError(
                f"PostgreSQL URLs must use postgresql+psycopg, got {parsed.drivername}"
            )
        return create_engine(parsed, pool_pre_ping=True)
    raise ValueError(f"unsupported database URL {parsed.drivername!r}: use SQLite or PostgreSQL")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below (pysqlite's own BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # In WAL mode NORMAL loses no committed transaction on a process crash, only on power loss.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        writes = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")
