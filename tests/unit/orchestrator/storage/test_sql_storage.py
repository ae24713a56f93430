"""The storage contract, run on a SQLite file and on a real PostgreSQL (see conftest)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from orchestrator.storage import (
    AssignmentStatus,
    Hardware,
    JobStatus,
    NewAssignment,
    NewJob,
    NewMemoryModel,
    NewModelVersion,
    NewNode,
    NewRound,
    NewUpdate,
    NodeRecord,
    NodeStatus,
    RoundRecord,
    RoundStatus,
    SqlStorage,
    StorageConflict,
    StorageNotFound,
    UpdateStatus,
)

from .conftest import SteppingClock

PI3 = Hardware(
    ram_bytes=1 << 30,
    num_cores=4,
    cpu_model="Cortex-A53",
    arch="aarch64",
    accelerator=None,
    torch_version="2.5.1",
    runtime_baseline_bytes=180 << 20,
)
XU4 = Hardware(
    ram_bytes=2 << 30,
    num_cores=8,
    cpu_model="Exynos5422",
    arch="armv7l",
    accelerator="Mali-T628",
    torch_version="2.5.1",
    runtime_baseline_bytes=210 << 20,
)
DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def _node(storage: SqlStorage, name: str = "pole-1", hardware: Hardware = PI3) -> NodeRecord:
    hardware_class = f"{hardware.arch}-{hardware.ram_bytes >> 20}MiB"
    return storage.create_node(NewNode(name, hardware_class, "sha256$00$11", hardware))


def _round(storage: SqlStorage, number: int = 0) -> RoundRecord:
    job = storage.create_job(NewJob(json.dumps({"student": "mobilenet_v2"})))
    deadline = datetime(2025, 6, 1, 12, tzinfo=UTC)
    return storage.create_round(NewRound(job.id, number, deadline, num_selected_nodes=3))


def _accepted(round_id: int, node_id: str, digest: str = DIGEST_A) -> NewUpdate:
    return NewUpdate(round_id, node_id, 64, 500 << 20, digest, UpdateStatus.ACCEPTED)


class TestNodes:
    def test_a_created_node_reads_back_with_its_hardware(
        self, storage: SqlStorage, clock: SteppingClock
    ) -> None:
        created = _node(storage, "pole-7", XU4)

        found = storage.get_node(created.id)

        assert found == created
        assert found.hardware == XU4
        assert found.name == "pole-7"
        assert found.status is NodeStatus.ACTIVE
        assert found.enrolled_at == found.last_seen_at == clock.now
        assert found.enrolled_at.tzinfo is not None

    def test_an_unknown_node_is_none(self, storage: SqlStorage) -> None:
        assert storage.get_node("missing") is None

    def test_nodes_are_listed_in_enrolment_order_and_by_hardware_class(
        self, storage: SqlStorage
    ) -> None:
        first, second, third = _node(storage, "a"), _node(storage, "b", XU4), _node(storage, "c")

        everyone = storage.list_nodes()
        pis = storage.list_nodes(hardware_class=first.hardware_class)

        assert [node.id for node in everyone] == [first.id, second.id, third.id]
        assert [node.id for node in pis] == [first.id, third.id]

    def test_a_heartbeat_moves_last_seen_and_counts_in_seen_since(
        self, storage: SqlStorage
    ) -> None:
        quiet, alive = _node(storage, "quiet"), _node(storage, "alive")
        later = alive.enrolled_at + timedelta(minutes=5)

        storage.touch_node(alive.id, later)

        assert [node.id for node in storage.nodes_seen_since(later)] == [alive.id]
        assert {node.id for node in storage.nodes_seen_since(quiet.enrolled_at)} == {
            quiet.id,
            alive.id,
        }
        touched = storage.get_node(alive.id)
        assert touched is not None and touched.last_seen_at == later

    def test_times_in_another_zone_come_back_as_the_same_instant_in_utc(
        self, storage: SqlStorage
    ) -> None:
        node = _node(storage)
        chicago = timezone(timedelta(hours=-6))
        seen = datetime(2025, 3, 1, 6, 30, tzinfo=chicago)

        storage.touch_node(node.id, seen)

        found = storage.get_node(node.id)
        assert found is not None
        assert found.last_seen_at == seen
        assert found.last_seen_at.utcoffset() == timedelta(0)
        assert found.last_seen_at.hour == 12

    def test_naive_times_are_refused(self, storage: SqlStorage) -> None:
        node = _node(storage)

        with pytest.raises(ValueError, match="timezone-aware"):
            storage.touch_node(node.id, datetime(2025, 1, 1))

    def test_a_heartbeat_of_an_unknown_node_is_not_found(self, storage: SqlStorage) -> None:
        with pytest.raises(StorageNotFound):
            storage.touch_node("missing")

    def test_status_and_hardware_can_change(self, storage: SqlStorage) -> None:
        node = _node(storage)

        disabled = storage.set_node_status(node.id, NodeStatus.DISABLED)
        upgraded = storage.update_hardware(node.id, XU4, "armv7l-2048MiB")

        assert disabled.status is NodeStatus.DISABLED
        assert upgraded.hardware == XU4
        assert upgraded.hardware_class == "armv7l-2048MiB"
        assert storage.get_node(node.id) == upgraded


class TestMemoryModels:
    def test_a_later_fit_replaces_the_earlier_one_of_its_class_and_model(
        self, storage: SqlStorage
    ) -> None:
        first = NewMemoryModel("aarch64-1024MiB", "mobilenet_v2", None, '{"fit": 1}')
        second = NewMemoryModel("aarch64-1024MiB", "mobilenet_v2", 224, '{"fit": 2}')
        storage.put_memory_model(first)

        replaced = storage.put_memory_model(second)

        found = storage.get_memory_model("aarch64-1024MiB", "mobilenet_v2")
        assert found == replaced
        assert (found.image_size, found.payload_json) == (224, '{"fit": 2}')
        assert len(storage.list_memory_models()) == 1

    def test_classes_and_models_are_kept_apart(self, storage: SqlStorage) -> None:
        storage.put_memory_model(NewMemoryModel("pi3", "mobilenet_v2", None, "{}"))
        storage.put_memory_model(NewMemoryModel("pi3", "resnet18", None, "{}"))
        storage.put_memory_model(NewMemoryModel("xu4", "mobilenet_v2", None, "{}"))

        assert storage.get_memory_model("xu4", "resnet18") is None
        assert [m.model for m in storage.list_memory_models(hardware_class="pi3")] == [
            "mobilenet_v2",
            "resnet18",
        ]


class TestJobs:
    def test_jobs_are_created_pending_and_listed_newest_first(self, storage: SqlStorage) -> None:
        older = storage.create_job(NewJob('{"rounds": 3}'))
        newer = storage.create_job(NewJob('{"rounds": 5}'))

        assert older.status is JobStatus.PENDING
        assert storage.get_job(older.id) == older
        assert [job.id for job in storage.list_jobs()] == [newer.id, older.id]

    def test_an_update_changes_only_the_fields_given(self, storage: SqlStorage) -> None:
        job = storage.create_job(NewJob("{}"))
        storage.update_job(job.id, status=JobStatus.RUNNING)
        finished = datetime(2025, 2, 1, tzinfo=UTC)

        done = storage.update_job(
            job.id, status=JobStatus.SUCCEEDED, finished_at=finished, final_model_version=3
        )

        assert done.status is JobStatus.SUCCEEDED
        assert (done.finished_at, done.final_model_version) == (finished, 3)
        assert storage.get_job(job.id) == done
        assert [j.id for j in storage.list_jobs(status=JobStatus.SUCCEEDED)] == [job.id]
        assert storage.list_jobs(status=JobStatus.RUNNING) == []

    def test_an_update_from_a_status_that_moved_on_is_a_conflict(self, storage: SqlStorage) -> None:
        job = storage.create_job(NewJob("{}"))
        storage.update_job(job.id, status=JobStatus.CANCELLED)

        with pytest.raises(StorageConflict, match="cancelled"):
            storage.update_job(job.id, status=JobStatus.RUNNING, expected_status=JobStatus.PENDING)
        found = storage.get_job(job.id)
        assert found is not None and found.status is JobStatus.CANCELLED

    def test_an_unknown_job_is_none_or_not_found(self, storage: SqlStorage) -> None:
        assert storage.get_job("missing") is None
        with pytest.raises(StorageNotFound):
            storage.update_job("missing", status=JobStatus.FAILED)


class TestRounds:
    def test_rounds_open_and_are_found_by_id_and_by_number(self, storage: SqlStorage) -> None:
        first = _round(storage)
        second = storage.create_round(
            NewRound(first.job_id, 1, first.deadline_at + timedelta(hours=1), 2)
        )

        assert first.status is RoundStatus.OPEN and first.finished_at is None
        assert storage.get_round(first.id) == first
        assert storage.get_round_by_number(first.job_id, 1) == second
        assert storage.list_rounds(first.job_id) == [first, second]
        assert storage.get_round_by_number(first.job_id, 2) is None

    def test_a_second_round_with_the_same_number_is_a_conflict(self, storage: SqlStorage) -> None:
        first = _round(storage)

        with pytest.raises(StorageConflict):
            storage.create_round(NewRound(first.job_id, 0, first.deadline_at, 3))

    def test_a_round_of_an_unknown_job_is_not_found(self, storage: SqlStorage) -> None:
        with pytest.raises(StorageNotFound):
            storage.create_round(NewRound("missing", 0, datetime(2025, 1, 1, tzinfo=UTC), 1))

    def test_only_one_of_quorum_and_deadline_closes_a_round(self, storage: SqlStorage) -> None:
        round_ = _round(storage)
        finished = round_.deadline_at

        closed = storage.update_round(
            round_.id,
            status=RoundStatus.AGGREGATING,
            expected_status=RoundStatus.OPEN,
            finished_at=finished,
        )

        with pytest.raises(StorageConflict):
            storage.update_round(
                round_.id, status=RoundStatus.AGGREGATING, expected_status=RoundStatus.OPEN
            )
        assert closed.status is RoundStatus.AGGREGATING and closed.finished_at == finished


class TestAssignments:
    def test_assignments_are_listed_by_round_and_pulled_by_node_and_status(
        self, storage: SqlStorage
    ) -> None:
        round_ = _round(storage)
        pi, xu = _node(storage, "pi"), _node(storage, "xu", XU4)
        schedule = json.dumps(["Fe_1", "F_2", "Bwd_2", "Bwd_1"])
        for node in (pi, xu):
            storage.create_assignment(NewAssignment(round_.id, node.id, 12, 2, schedule, 9 << 20))

        pending = storage.assignments_of_node(pi.id, status=AssignmentStatus.PENDING)
        sent = storage.update_assignment_status(pending[0].id, AssignmentStatus.SENT)

        assert [a.node_id for a in storage.list_assignments(round_.id)] == [pi.id, xu.id]
        assert (sent.batch_size, sent.accumulation_steps, sent.schedule_json) == (12, 2, schedule)
        assert storage.assignments_of_node(pi.id, status=AssignmentStatus.PENDING) == []
        assert storage.assignments_of_node(pi.id) == [sent]

    def test_a_second_assignment_of_a_node_in_a_round_is_a_conflict(
        self, storage: SqlStorage
    ) -> None:
        round_, node = _round(storage), _node(storage)
        storage.create_assignment(NewAssignment(round_.id, node.id, 4, 1, "[]", 1))

        with pytest.raises(StorageConflict):
            storage.create_assignment(NewAssignment(round_.id, node.id, 8, 1, "[]", 1))


class TestUpdates:
    def test_accepted_and_rejected_updates_are_listed_by_round(self, storage: SqlStorage) -> None:
        round_, other_round = _round(storage), _round(storage)
        a, b, c = _node(storage, "a"), _node(storage, "b"), _node(storage, "c")
        late = NewUpdate(round_.id, b.id, 64, None, None, UpdateStatus.REJECTED, "late")
        storage.record_update(_accepted(round_.id, a.id))
        storage.record_update(late)
        storage.record_update(_accepted(other_round.id, c.id))

        updates = storage.list_updates(round_.id)
        accepted = storage.list_updates(round_.id, status=UpdateStatus.ACCEPTED)

        assert [(u.node_id, u.status, u.reason) for u in updates] == [
            (a.id, UpdateStatus.ACCEPTED, None),
            (b.id, UpdateStatus.REJECTED, "late"),
        ]
        assert [(u.node_id, u.blob_digest, u.num_samples) for u in accepted] == [
            (a.id, DIGEST_A, 64)
        ]
        assert accepted[0].measured_peak_bytes == 500 << 20

    def test_a_duplicate_update_is_a_conflict_and_the_first_stands(
        self, storage: SqlStorage
    ) -> None:
        round_, node = _round(storage), _node(storage)
        first = storage.record_update(_accepted(round_.id, node.id, DIGEST_A))

        with pytest.raises(StorageConflict, match="duplicate update"):
            storage.record_update(_accepted(round_.id, node.id, DIGEST_B))

        assert storage.list_updates(round_.id) == [first]

    def test_a_node_whose_update_was_rejected_cannot_send_another(
        self, storage: SqlStorage
    ) -> None:
        round_, node = _round(storage), _node(storage)
        storage.record_update(
            NewUpdate(round_.id, node.id, 64, None, DIGEST_A, UpdateStatus.REJECTED, "non_finite")
        )

        with pytest.raises(StorageConflict):
            storage.record_update(_accepted(round_.id, node.id, DIGEST_B))

    def test_simultaneous_duplicates_let_exactly_one_through(self, storage: SqlStorage) -> None:
        round_, node = _round(storage), _node(storage)
        num_threads = 8
        outcomes: list[str] = []
        barrier = threading.Barrier(num_threads)

        def upload() -> None:
            barrier.wait()
            try:
                storage.record_update(_accepted(round_.id, node.id))
                outcomes.append("stored")
            except StorageConflict:
                outcomes.append("conflict")

        threads = [threading.Thread(target=upload) for _ in range(num_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(outcomes) == ["conflict"] * (num_threads - 1) + ["stored"]
        assert len(storage.list_updates(round_.id)) == 1

    def test_an_update_for_an_unknown_round_or_node_is_not_found(self, storage: SqlStorage) -> None:
        round_, node = _round(storage), _node(storage)

        with pytest.raises(StorageNotFound, match="round"):
            storage.record_update(_accepted(round_.id + 1000, node.id))
        with pytest.raises(StorageNotFound, match="node"):
            storage.record_update(_accepted(round_.id, "missing"))


class TestModelVersions:
    def test_versions_are_found_by_number_and_the_latest_is_the_highest(
        self, storage: SqlStorage
    ) -> None:
        round_ = _round(storage)
        initial = storage.create_model_version(NewModelVersion(round_.job_id, 0, None, DIGEST_A))
        after = storage.create_model_version(NewModelVersion(round_.job_id, 1, round_.id, DIGEST_B))

        assert storage.get_model_version(round_.job_id, 0) == initial
        assert storage.latest_model_version(round_.job_id) == after
        assert storage.list_model_versions(round_.job_id) == [initial, after]
        assert after.round_id == round_.id and initial.round_id is None

    def test_a_job_without_versions_has_no_latest(self, storage: SqlStorage) -> None:
        job = storage.create_job(NewJob("{}"))

        assert storage.latest_model_version(job.id) is None
        assert storage.get_model_version(job.id, 0) is None

    def test_a_second_version_with_the_same_number_is_a_conflict(self, storage: SqlStorage) -> None:
        job = storage.create_job(NewJob("{}"))
        storage.create_model_version(NewModelVersion(job.id, 0, None, DIGEST_A))

        with pytest.raises(StorageConflict):
            storage.create_model_version(NewModelVersion(job.id, 0, None, DIGEST_B))


def test_everything_survives_reopening_the_same_database(
    database_url: str, clock: SteppingClock
) -> None:
    with SqlStorage(database_url, clock=clock) as before:
        round_, node = _round(before), _node(before)
        update = before.record_update(_accepted(round_.id, node.id))

    # A restarted coordinator migrates again (nothing to do) and finds every acknowledged update.
    with SqlStorage(database_url, clock=clock) as after:
        assert after.get_round(round_.id) == round_
        assert after.get_node(node.id) == node
        assert after.list_updates(round_.id) == [update]
