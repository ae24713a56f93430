"""The Alembic migrations build exactly the tables of ``schema.py``, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from orchestrator.storage import create_storage_engine, migrate
from orchestrator.storage.migrate import MIGRATIONS_DIR, alembic_config, downgrade
from orchestrator.storage.schema import Base


def _differences(url: str) -> list[object]:
    engine = create_storage_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_storage_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_migrated_schema_equals_the_table_definitions(database_url: str) -> None:
    migrate(database_url)

    assert _differences(database_url) == []


def test_an_empty_database_differs_from_the_definitions(database_url: str) -> None:
    # The comparison above can fail: on a database without the tables it reports them all.
    differences = _differences(database_url)

    added = {
        diff[1].name for diff in differences if isinstance(diff, tuple) and diff[0] == "add_table"
    }
    assert added == set(Base.metadata.tables)


def test_migrating_twice_changes_nothing(database_url: str) -> None:
    migrate(database_url)

    migrate(database_url)

    assert _differences(database_url) == []


def test_downgrading_to_base_removes_every_table_and_upgrading_restores_them(
    database_url: str,
) -> None:
    migrate(database_url)

    downgrade(database_url, "base")
    emptied = _tables(database_url)
    migrate(database_url)

    assert emptied == {"alembic_version"}
    assert _differences(database_url) == []


def test_there_is_one_head_and_it_is_the_initial_revision() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())

    assert scripts.get_heads() == ["0001"]


def test_the_migrations_ship_as_packages_of_the_wheel() -> None:
    # pyproject's package discovery takes only folders with an __init__.py: without one, an
    # installed coordinator would lack the revisions in that folder.
    folders = {path.parent for path in MIGRATIONS_DIR.rglob("*.py")}

    assert MIGRATIONS_DIR.parent.name == "orchestrator"
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "versions") in folders
    assert all((folder / "__init__.py").is_file() for folder in folders)
