"""The Alembic migrations build exactly the tables of ``schema.py``, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, column, func, insert, inspect, select, table

from orchestrator.storage import (
    JobStatus,
    NewEvent,
    NewMemoryModel,
    RoundStatus,
    SqlStorage,
    create_storage_engine,
    migrate,
)
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


def test_there_is_one_head_and_it_is_the_newest_revision() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())

    assert scripts.get_heads() == ["0002"]


# Rows as revision 0001 left them, in an order the foreign keys accept. Written with plain table
# clauses rather than schema.py, whose tables are already those of the newest revision.
CREATED_AT = datetime(2025, 1, 1, 8, tzinfo=UTC)
ROWS_AT_0001: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "nodes",
        [
            {
                "id": "node1",
                "name": "pole-1",
                "hardware_class": "aarch64-1024MiB",
                "credential_hash": "sha256$00$11",
                "enrolled_at": CREATED_AT,
                "last_seen_at": CREATED_AT + timedelta(minutes=1),
                "status": "active",
            }
        ],
    ),
    (
        "hardware",
        [
            {
                "node_id": "node1",
                "ram_bytes": 1 << 30,
                "num_cores": 4,
                "cpu_model": "Cortex-A53",
                "arch": "aarch64",
                "accelerator": None,
                "torch_version": "2.5.1",
                "runtime_baseline_bytes": 180 << 20,
            }
        ],
    ),
    (
        "memory_models",
        [
            {
                "hardware_class": "aarch64-1024MiB",
                "model": "mobilenet_v2",
                "image_size": 224,
                "payload_json": '{"fit": 224}',
                "created_at": CREATED_AT,
            },
            {
                "hardware_class": "aarch64-1024MiB",
                "model": "resnet18",
                "image_size": None,
                "payload_json": '{"fit": "any size"}',
                "created_at": CREATED_AT,
            },
        ],
    ),
    (
        "jobs",
        [
            {
                "id": "job1",
                "spec_json": '{"rounds": 3}',
                "status": "running",
                "created_at": CREATED_AT,
                "finished_at": None,
                "final_model_version": None,
            }
        ],
    ),
    (
        "rounds",
        [
            {
                "id": 1,
                "job_id": "job1",
                "number": 0,
                "status": "completed",
                "deadline_at": CREATED_AT + timedelta(hours=1),
                "started_at": CREATED_AT,
                "finished_at": CREATED_AT + timedelta(minutes=30),
                "num_selected_nodes": 1,
            }
        ],
    ),
    (
        "assignments",
        [
            {
                "id": 1,
                "round_id": 1,
                "node_id": "node1",
                "batch_size": 12,
                "accumulation_steps": 2,
                "schedule_json": '["Fe_1", "Bwd_1"]',
                "predicted_peak_bytes": 9 << 20,
                "status": "done",
                "created_at": CREATED_AT,
            }
        ],
    ),
    (
        "updates",
        [
            {
                "id": 1,
                "round_id": 1,
                "node_id": "node1",
                "num_samples": 64,
                "measured_peak_bytes": 500 << 20,
                "blob_digest": "a" * 64,
                "status": "accepted",
                "reason": None,
                "received_at": CREATED_AT + timedelta(minutes=20),
            }
        ],
    ),
    (
        "model_versions",
        [
            {
                "id": 1,
                "job_id": "job1",
                "version": 1,
                "round_id": 1,
                "digest": "b" * 64,
                "created_at": CREATED_AT + timedelta(minutes=30),
            }
        ],
    ),
]


def _insert_rows(url: str, rows: list[tuple[str, list[dict[str, Any]]]]) -> None:
    engine = create_storage_engine(url)
    try:
        with engine.begin() as connection:
            for table_name, values in rows:
                columns = [
                    column(name, DateTime(timezone=True) if isinstance(value, datetime) else None)
                    for name, value in values[0].items()
                ]
                connection.execute(insert(table(table_name, *columns)), values)
    finally:
        engine.dispose()


def _row_counts(url: str) -> dict[str, int]:
    engine = create_storage_engine(url)
    try:
        with engine.connect() as connection:
            return {
                name: connection.execute(select(func.count()).select_from(table(name))).scalar_one()
                for name, _ in ROWS_AT_0001
            }
    finally:
        engine.dispose()


def test_upgrading_from_0001_keeps_every_row_and_fills_the_new_columns(database_url: str) -> None:
    migrate(database_url, "0001")
    _insert_rows(database_url, ROWS_AT_0001)

    migrate(database_url)

    assert _differences(database_url) == []
    with SqlStorage(database_url, run_migrations=False) as storage:
        node = storage.get_node("node1")
        job = storage.get_job("job1")
        round_ = storage.get_round(1)
        assignment = storage.get_assignment(1)
        updates = storage.list_updates(1)
        model_version = storage.get_model_version("job1", 1)
        memory_models = storage.list_memory_models()
    assert node is not None
    assert (node.name, node.last_seen_at) == ("pole-1", CREATED_AT + timedelta(minutes=1))
    assert (node.agent_version, node.current_task_id, node.rss_bytes) == ("", None, None)
    assert node.hardware.runtime_baseline_bytes == 180 << 20
    assert (node.hardware.memory_budget_bytes, node.hardware.accelerator_memory_bytes) == (0, 0)
    assert job is not None
    assert (job.status, job.spec_json, job.message) == (JobStatus.RUNNING, '{"rounds": 3}', "")
    assert job.updated_at == job.created_at == CREATED_AT
    assert round_ is not None
    assert (round_.status, round_.job_id) == (RoundStatus.COMPLETED, "job1")
    assert (round_.outcome, round_.aggregation_s, round_.num_updates) == (None, None, None)
    assert assignment is not None and assignment.schedule_json == '["Fe_1", "Bwd_1"]'
    assert [(u.node_id, u.blob_digest, u.train_loss) for u in updates] == [
        ("node1", "a" * 64, None)
    ]
    assert model_version is not None and model_version.round_id == 1
    # A fit without an image size has no key in 0002: it alone is dropped (see the revision).
    assert [(m.model, m.image_size, m.payload_json) for m in memory_models] == [
        ("mobilenet_v2", 224, '{"fit": 224}')
    ]


def test_the_upgraded_database_takes_the_new_records(database_url: str) -> None:
    migrate(database_url, "0001")
    _insert_rows(database_url, ROWS_AT_0001)
    migrate(database_url)

    with SqlStorage(database_url, run_migrations=False) as storage:
        first = storage.append_event(NewEvent("job1", "round_completed", '{"round": 0}'))
        job = storage.update_job("job1", message="round 0 done")

    assert first.sequence == 1
    assert job.message == "round 0 done" and job.updated_at > job.created_at


def test_downgrading_to_0001_keeps_the_rows_that_0001_can_hold(database_url: str) -> None:
    migrate(database_url, "0001")
    _insert_rows(database_url, ROWS_AT_0001)
    migrate(database_url)
    with SqlStorage(database_url, run_migrations=False) as storage:
        storage.put_memory_model(NewMemoryModel("aarch64-1024MiB", "mobilenet_v2", 160, "{}"))

    downgrade(database_url, "0001")

    # Two image sizes of one model fold into the one fit 0001 keeps per (class, model).
    assert _row_counts(database_url) == {name: 1 for name, _ in ROWS_AT_0001}


def test_the_migrations_ship_as_packages_of_the_wheel() -> None:
    # pyproject's package discovery takes only folders with an __init__.py: without one, an
    # installed coordinator would lack the revisions in that folder.
    folders = {path.parent for path in MIGRATIONS_DIR.rglob("*.py")}

    assert MIGRATIONS_DIR.parent.name == "orchestrator"
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "versions") in folders
    assert all((folder / "__init__.py").is_file() for folder in folders)
