"""Databases for the storage suite: a SQLite file, and a fresh schema in a real PostgreSQL.

PostgreSQL is the one at 127.0.0.1:5432 (database ``test``, trust auth), or the server that
``EDGEFLEET_TEST_POSTGRES_URL`` names. Each test gets a schema of its own, dropped afterwards;
the PostgreSQL cases are skipped only when no server answers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from orchestrator.storage import SqlStorage, sqlite_url

POSTGRES_URL = os.environ.get(
    "EDGEFLEET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")


class SteppingClock:
    """A clock that moves one second per reading, so that creation order is never a tie."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} ({error.orig}); start it first")
    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "registry.sqlite")
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    schema = f"edgefleet_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        # Everything the storage creates lands in the schema first on the search path.
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock(datetime(2025, 1, 1, tzinfo=UTC))


@pytest.fixture
def storage(database_url: str, clock: SteppingClock) -> Iterator[SqlStorage]:
    with SqlStorage(database_url, clock=clock) as opened:
        yield opened
