"""Engines: which URLs are accepted, and SQLite set up for a multi-threaded server."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from orchestrator.storage import create_storage_engine, sqlite_url


def test_a_sqlite_file_runs_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_storage_engine(sqlite_url(tmp_path / "registry.sqlite"))
    try:
        with engine.connect() as connection:
            journal = connection.execute(text("PRAGMA journal_mode")).scalar()
            foreign_keys = connection.execute(text("PRAGMA foreign_keys")).scalar()
    finally:
        engine.dispose()

    assert (journal, foreign_keys) == ("wal", 1)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite+pysqlite:///:memory:", "in-memory"),
        ("sqlite+aiosqlite:///x.db", "sqlite\\+pysqlite"),
        ("postgresql+psycopg2://u@h/db", "postgresql\\+psycopg"),
        ("mysql+pymysql://u@h/db", "unsupported"),
    ],
)
def test_unsupported_urls_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_storage_engine(url)
