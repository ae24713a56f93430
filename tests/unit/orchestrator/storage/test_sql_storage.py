"""The storage contract, run on a SQLite file and on a real PostgreSQL (see conftest)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from orchestrator.storage import (
    AssignmentStatus,
    Hardware,
    JobRecord,
    JobStatus,
    NewAssignment,
    NewEvent,
    NewJob,
    NewMemoryModel,
    NewModelVersion,
    NewNode,
    NewNodePlan,
    NewProfileTask,
    NewRound,
    NewUpdate,
    NodeRecord,
    NodeSeen,
    NodeStatus,
    ProfileTaskStatus,
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


def _job(storage: SqlStorage) -> JobRecord:
    return storage.create_job(NewJob(json.dumps({"student": "mobilenet_v2"})))


def _profile_task(
    node_id: str, job_id: str | None = None, model: str = "mobilenet_v2", image_size: int = 224
) -> NewProfileTask:
    return NewProfileTask(
        node_id, job_id, "aarch64-1024MiB", model, image_size, (1, 2, 4), (64, 128, image_size)
    )


def _plan(job_id: str, node_id: str, batch_size: int = 12) -> NewNodePlan:
    plan = json.dumps({"batch_size": batch_size, "schedule": ["Fe_1", "Bwd_1"]})
    return NewNodePlan(job_id, node_id, fits=True, plan_json=plan, budget_bytes=900 << 20)


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

    def test_the_agent_version_and_memory_sizes_read_back(self, storage: SqlStorage) -> None:
        hardware = replace(PI3, memory_budget_bytes=700 << 20, accelerator_memory_bytes=0)
        created = storage.create_node(
            NewNode("pole-2", "aarch64-1024MiB", "sha256$00$11", hardware, agent_version="0.3.1")
        )

        found = storage.get_node(created.id)

        assert found == created
        assert found.agent_version == "0.3.1"
        assert found.hardware.memory_budget_bytes == 700 << 20
        assert (found.current_task_id, found.rss_bytes) == (None, None)

    def test_a_heartbeat_records_the_current_task_and_one_without_clears_it(
        self, storage: SqlStorage
    ) -> None:
        node = _node(storage)
        storage.touch_node(node.id, current_task_id="assignment-7", rss_bytes=612 << 20)
        busy = storage.get_node(node.id)

        storage.touch_node(node.id)

        idle = storage.get_node(node.id)
        assert busy is not None and idle is not None
        assert (busy.current_task_id, busy.rss_bytes) == ("assignment-7", 612 << 20)
        assert (idle.current_task_id, idle.rss_bytes) == (None, None)
        assert idle.last_seen_at > busy.last_seen_at > node.last_seen_at

    def test_a_batch_of_heartbeats_is_written_at_once(self, storage: SqlStorage) -> None:
        pi, xu = _node(storage, "pi"), _node(storage, "xu", XU4)
        seen = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

        storage.touch_nodes(
            {
                pi.id: NodeSeen(seen, "train-4", 300 << 20),
                xu.id: NodeSeen(seen + timedelta(seconds=1)),
                "missing": NodeSeen(seen),
            }
        )

        found_pi, found_xu = storage.get_node(pi.id), storage.get_node(xu.id)
        assert found_pi is not None and found_xu is not None
        assert (found_pi.last_seen_at, found_pi.current_task_id, found_pi.rss_bytes) == (
            seen,
            "train-4",
            300 << 20,
        )
        assert (found_xu.last_seen_at, found_xu.current_task_id) == (
            seen + timedelta(seconds=1),
            None,
        )
        with pytest.raises(ValueError, match="rss_bytes"):
            storage.touch_nodes({pi.id: NodeSeen(seen, rss_bytes=-1)})

    def test_a_heartbeat_refuses_what_its_columns_cannot_hold(self, storage: SqlStorage) -> None:
        node = _node(storage)

        with pytest.raises(ValueError, match="rss_bytes"):
            storage.touch_node(node.id, rss_bytes=-1)
        with pytest.raises(ValueError, match="current_task_id"):
            storage.touch_node(node.id, current_task_id="t" * 65)
        assert storage.get_node(node.id) == node

    def test_status_and_hardware_can_change(self, storage: SqlStorage) -> None:
        node = _node(storage)

        disabled = storage.set_node_status(node.id, NodeStatus.DISABLED)
        upgraded = storage.update_hardware(node.id, XU4, "armv7l-2048MiB")

        assert disabled.status is NodeStatus.DISABLED
        assert upgraded.hardware == XU4
        assert upgraded.hardware_class == "armv7l-2048MiB"
        assert storage.get_node(node.id) == upgraded


class TestMemoryModels:
    def test_a_later_fit_replaces_the_earlier_one_of_its_class_model_and_size(
        self, storage: SqlStorage
    ) -> None:
        first = NewMemoryModel("aarch64-1024MiB", "mobilenet_v2", 224, '{"fit": 1}')
        second = NewMemoryModel("aarch64-1024MiB", "mobilenet_v2", 224, '{"fit": 2}')
        stored = storage.put_memory_model(first)

        replaced = storage.put_memory_model(second)

        found = storage.get_memory_model("aarch64-1024MiB", "mobilenet_v2", 224)
        assert found == replaced
        assert (found.image_size, found.payload_json) == (224, '{"fit": 2}')
        assert found.created_at > stored.created_at
        assert len(storage.list_memory_models()) == 1

    def test_fits_at_other_image_sizes_are_kept_apart(self, storage: SqlStorage) -> None:
        large = storage.put_memory_model(NewMemoryModel("pi3", "mobilenet_v2", 224, '{"s": 224}'))
        small = storage.put_memory_model(NewMemoryModel("pi3", "mobilenet_v2", 96, '{"s": 96}'))

        assert storage.get_memory_model("pi3", "mobilenet_v2", 224) == large
        assert storage.get_memory_model("pi3", "mobilenet_v2", 96) == small
        assert storage.get_memory_model("pi3", "mobilenet_v2", 128) is None
        assert storage.list_memory_models() == [small, large]

    def test_classes_and_models_are_kept_apart(self, storage: SqlStorage) -> None:
        storage.put_memory_model(NewMemoryModel("pi3", "mobilenet_v2", 224, "{}"))
        storage.put_memory_model(NewMemoryModel("pi3", "resnet18", 224, "{}"))
        storage.put_memory_model(NewMemoryModel("xu4", "mobilenet_v2", 224, "{}"))

        assert storage.get_memory_model("xu4", "resnet18", 224) is None
        assert [m.model for m in storage.list_memory_models(hardware_class="pi3")] == [
            "mobilenet_v2",
            "resnet18",
        ]


class TestJobs:
    def test_jobs_are_created_pending_and_listed_newest_first(self, storage: SqlStorage) -> None:
        older = storage.create_job(NewJob('{"rounds": 3}'))
        newer = storage.create_job(NewJob('{"rounds": 5}'))

        assert older.status is JobStatus.PENDING
        assert (older.message, older.updated_at) == ("", older.created_at)
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

    def test_every_update_moves_updated_at_and_a_message_stays_until_replaced(
        self, storage: SqlStorage, clock: SteppingClock
    ) -> None:
        job = storage.create_job(NewJob("{}"))
        explained = storage.update_job(job.id, message="waiting for 3 nodes")

        touched = storage.update_job(job.id)

        assert explained.message == touched.message == "waiting for 3 nodes"
        assert job.updated_at < explained.updated_at < touched.updated_at == clock.now
        assert touched.status is JobStatus.PENDING
        assert storage.get_job(job.id) == touched

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

    def test_a_closed_round_records_its_outcome_and_later_updates_keep_it(
        self, storage: SqlStorage
    ) -> None:
        round_ = _round(storage)
        storage.update_round(
            round_.id,
            status=RoundStatus.COMPLETED,
            outcome="quorum",
            aggregation_s=1.25,
            num_updates=3,
        )

        failed = storage.update_round(round_.id, status=RoundStatus.FAILED)

        assert (failed.outcome, failed.aggregation_s, failed.num_updates) == ("quorum", 1.25, 3)
        assert failed.status is RoundStatus.FAILED
        assert storage.get_round(round_.id) == failed
        assert (round_.outcome, round_.aggregation_s, round_.num_updates) == (None, None, None)

    def test_round_figures_that_cannot_be_right_are_refused(self, storage: SqlStorage) -> None:
        round_ = _round(storage)

        with pytest.raises(ValueError, match="outcome"):
            storage.update_round(round_.id, status=RoundStatus.COMPLETED, outcome="x" * 17)
        with pytest.raises(ValueError, match="aggregation_s"):
            storage.update_round(round_.id, status=RoundStatus.COMPLETED, aggregation_s=-1.0)
        with pytest.raises(ValueError, match="num_updates"):
            storage.update_round(round_.id, status=RoundStatus.COMPLETED, num_updates=-1)
        assert storage.get_round(round_.id) == round_

    def test_an_update_of_an_unknown_round_is_not_found(self, storage: SqlStorage) -> None:
        with pytest.raises(StorageNotFound):
            storage.update_round(12345, status=RoundStatus.FAILED, outcome="deadline")


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

    def test_an_assignment_is_found_by_id(self, storage: SqlStorage) -> None:
        round_, node = _round(storage), _node(storage)
        created = storage.create_assignment(NewAssignment(round_.id, node.id, 4, 1, "[]", 1))

        found = storage.get_assignment(created.id)

        assert found == created
        assert storage.get_assignment(created.id + 1000) is None

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

    def test_training_figures_read_back_and_default_to_none(self, storage: SqlStorage) -> None:
        round_, a, b = _round(storage), _node(storage, "a"), _node(storage, "b")
        trained = replace(_accepted(round_.id, a.id), train_loss=0.75, train_duration_s=42.5)
        storage.record_update(trained)
        storage.record_update(_accepted(round_.id, b.id))

        updates = storage.list_updates(round_.id)

        assert [(u.train_loss, u.train_duration_s) for u in updates] == [
            (0.75, 42.5),
            (None, None),
        ]

    def test_a_duplicate_update_is_a_conflict_and_the_first_stands(
        self, storage: SqlStorage
    ) -> None:
        round_, node = _round(storage), _node(storage)
        first = storage.record_update(_accepted(round_.id, node.id, DIGEST_A))

        with pytest.raises(StorageConflict, match="duplicate update"):
            storage.record_update(_accepted(round_.id, node.id, DIGEST_B))

        assert storage.list_updates(round_.id) == [first]

    def test_an_update_completes_its_assignment_in_the_same_transaction(
        self, storage: SqlStorage
    ) -> None:
        round_, node, other = _round(storage), _node(storage, "a"), _node(storage, "b")
        mine = storage.create_assignment(NewAssignment(round_.id, node.id, 4, 1, "[]", 1))
        theirs = storage.create_assignment(NewAssignment(round_.id, other.id, 4, 1, "[]", 1))
        storage.record_update(_accepted(round_.id, node.id), completes=mine.id)

        with pytest.raises(ValueError, match="not node"):
            storage.record_update(_accepted(round_.id, other.id), completes=mine.id)
        with pytest.raises(StorageConflict):
            storage.record_update(_accepted(round_.id, node.id), completes=mine.id)

        assert storage.get_assignment(mine.id).status is AssignmentStatus.DONE  # type: ignore[union-attr]
        assert storage.get_assignment(theirs.id).status is AssignmentStatus.PENDING  # type: ignore[union-attr]
        assert len(storage.list_updates(round_.id)) == 1

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


class TestEvents:
    def test_a_jobs_events_are_numbered_from_one_and_listed_in_order(
        self, storage: SqlStorage, clock: SteppingClock
    ) -> None:
        job = _job(storage)
        kinds = ["job_started", "round_opened", "round_closed"]

        appended = [storage.append_event(NewEvent(job.id, kind, "{}")) for kind in kinds]

        assert [event.sequence for event in appended] == [1, 2, 3]
        assert appended[-1].created_at == clock.now
        assert storage.list_events(job.id) == appended
        assert [event.kind for event in storage.list_events(job.id)] == kinds

    def test_events_are_read_after_a_sequence_and_in_pages(self, storage: SqlStorage) -> None:
        job = _job(storage)
        for number in range(5):
            storage.append_event(NewEvent(job.id, "round_opened", json.dumps({"round": number})))

        after_two = storage.list_events(job.id, after_sequence=2)
        page = storage.list_events(job.id, after_sequence=1, limit=2)

        assert [event.sequence for event in after_two] == [3, 4, 5]
        assert [json.loads(event.payload_json)["round"] for event in page] == [1, 2]
        assert storage.list_events(job.id, after_sequence=5) == []
        assert storage.list_events(job.id, limit=0) == []

    def test_each_job_counts_its_own_events(self, storage: SqlStorage) -> None:
        first, second = _job(storage), _job(storage)
        storage.append_event(NewEvent(first.id, "job_started", "{}"))
        storage.append_event(NewEvent(first.id, "round_opened", "{}"))

        other = storage.append_event(NewEvent(second.id, "job_started", "{}"))

        assert other.sequence == 1
        assert [event.job_id for event in storage.list_events(second.id)] == [second.id]

    def test_an_event_of_an_unknown_job_is_not_found(self, storage: SqlStorage) -> None:
        with pytest.raises(StorageNotFound, match="job"):
            storage.append_event(NewEvent("missing", "job_started", "{}"))
        assert storage.list_events("missing") == []

    def test_a_negative_limit_is_refused(self, storage: SqlStorage) -> None:
        job = _job(storage)

        with pytest.raises(ValueError, match="limit"):
            storage.list_events(job.id, limit=-1)

    def test_simultaneous_appends_get_every_sequence_once(self, storage: SqlStorage) -> None:
        job, other_job = _job(storage), _job(storage)
        num_threads, num_events_each = 8, 5
        barrier = threading.Barrier(num_threads)
        errors: list[BaseException] = []

        def append_several(thread_index: int) -> None:
            barrier.wait()
            try:
                for event_index in range(num_events_each):
                    payload = json.dumps({"thread": thread_index, "event": event_index})
                    storage.append_event(NewEvent(job.id, "progress", payload))
            except BaseException as error:  # Reported below: a thread's exception is lost.
                errors.append(error)

        threads = [
            threading.Thread(target=append_several, args=(index,)) for index in range(num_threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        events = storage.list_events(job.id)
        assert errors == []
        assert [event.sequence for event in events] == list(
            range(1, num_threads * num_events_each + 1)
        )
        # Each thread's events keep its order: the sequence is taken as the event is stored.
        payloads = [json.loads(event.payload_json) for event in events]
        for thread_index in range(num_threads):
            mine = [payload["event"] for payload in payloads if payload["thread"] == thread_index]
            assert mine == list(range(num_events_each))
        assert storage.list_events(other_job.id) == []


class TestProfileTasks:
    def test_a_task_is_created_pending_and_reads_back(
        self, storage: SqlStorage, clock: SteppingClock
    ) -> None:
        node, job = _node(storage), _job(storage)

        created = storage.create_profile_task(_profile_task(node.id, job.id))

        assert created.status is ProfileTaskStatus.PENDING
        assert (created.node_id, created.job_id) == (node.id, job.id)
        assert (created.batch_sizes, created.image_sizes) == ((1, 2, 4), (64, 128, 224))
        assert (created.message, created.created_at, created.updated_at) == (
            "",
            clock.now,
            clock.now,
        )
        assert len(created.id) == 32
        assert storage.get_profile_task(created.id) == created

    def test_a_task_may_belong_to_no_job(self, storage: SqlStorage) -> None:
        node = _node(storage)

        created = storage.create_profile_task(_profile_task(node.id, None))

        assert created.job_id is None
        assert storage.get_profile_task(created.id) == created

    def test_a_task_for_an_unknown_node_or_job_is_not_found(self, storage: SqlStorage) -> None:
        node = _node(storage)

        with pytest.raises(StorageNotFound, match="node"):
            storage.create_profile_task(_profile_task("missing"))
        with pytest.raises(StorageNotFound, match="job"):
            storage.create_profile_task(_profile_task(node.id, "missing"))
        assert storage.list_profile_tasks() == []
        assert storage.get_profile_task("missing") is None

    def test_tasks_are_listed_oldest_first_and_filtered(self, storage: SqlStorage) -> None:
        pi, xu = _node(storage, "pi"), _node(storage, "xu", XU4)
        first = storage.create_profile_task(_profile_task(pi.id))
        second = storage.create_profile_task(_profile_task(xu.id, model="resnet18"))
        third = storage.create_profile_task(_profile_task(pi.id, image_size=96))
        fourth = replace(_profile_task(xu.id), hardware_class="armv7l-2048MiB")
        fourth_stored = storage.create_profile_task(fourth)
        storage.update_profile_task(first.id, status=ProfileTaskStatus.SENT)

        def ids(**filters: Any) -> list[str]:
            return [task.id for task in storage.list_profile_tasks(**filters)]

        assert ids() == [first.id, second.id, third.id, fourth_stored.id]
        assert ids(node_id=pi.id) == [first.id, third.id]
        assert ids(hardware_class="armv7l-2048MiB") == [fourth_stored.id]
        assert ids(model="resnet18") == [second.id]
        assert ids(image_size=96) == [third.id]
        assert ids(status=ProfileTaskStatus.PENDING) == [second.id, third.id, fourth_stored.id]
        assert ids(node_id=pi.id, status=ProfileTaskStatus.PENDING) == [third.id]
        assert ids(model="mobilenet_v2", image_size=224, hardware_class="aarch64-1024MiB") == [
            first.id
        ]

    def test_an_update_sets_status_message_and_updated_at(
        self, storage: SqlStorage, clock: SteppingClock
    ) -> None:
        task = storage.create_profile_task(_profile_task(_node(storage).id))
        storage.update_profile_task(
            task.id, status=ProfileTaskStatus.SENT, expected_status=ProfileTaskStatus.PENDING
        )

        failed = storage.update_profile_task(
            task.id, status=ProfileTaskStatus.FAILED, message="out of memory at batch 4"
        )
        kept = storage.update_profile_task(task.id, status=ProfileTaskStatus.FAILED)

        assert failed.status is ProfileTaskStatus.FAILED
        assert kept.message == failed.message == "out of memory at batch 4"
        assert kept.updated_at == clock.now > failed.updated_at > task.updated_at
        assert kept.created_at == task.created_at
        assert storage.get_profile_task(task.id) == kept

    def test_an_update_from_a_status_that_moved_on_is_a_conflict(self, storage: SqlStorage) -> None:
        task = storage.create_profile_task(_profile_task(_node(storage).id))
        done = storage.update_profile_task(task.id, status=ProfileTaskStatus.DONE)

        with pytest.raises(StorageConflict, match="done"):
            storage.update_profile_task(
                task.id, status=ProfileTaskStatus.SENT, expected_status=ProfileTaskStatus.PENDING
            )
        assert storage.get_profile_task(task.id) == done

    def test_an_update_of_an_unknown_task_is_not_found(self, storage: SqlStorage) -> None:
        with pytest.raises(StorageNotFound, match="profile task"):
            storage.update_profile_task("missing", status=ProfileTaskStatus.DONE)


class TestNodePlans:
    def test_a_plan_reads_back(self, storage: SqlStorage, clock: SteppingClock) -> None:
        job, node = _job(storage), _node(storage)

        stored = storage.put_node_plan(_plan(job.id, node.id))

        assert (stored.job_id, stored.node_id, stored.fits) == (job.id, node.id, True)
        assert json.loads(stored.plan_json or "null")["batch_size"] == 12
        assert (stored.budget_bytes, stored.shortfall_bytes) == (900 << 20, 0)
        assert (stored.message, stored.oom_count, stored.updated_at) == ("", 0, clock.now)
        assert storage.get_node_plan(job.id, node.id) == stored

    def test_a_later_plan_replaces_the_earlier_one_of_its_job_and_node(
        self, storage: SqlStorage
    ) -> None:
        job, node = _job(storage), _node(storage)
        first = storage.put_node_plan(_plan(job.id, node.id))
        refusal = NewNodePlan(
            job.id,
            node.id,
            fits=False,
            plan_json=None,
            budget_bytes=600 << 20,
            shortfall_bytes=40 << 20,
            message="needs 40 MiB more",
            oom_count=1,
        )

        replaced = storage.put_node_plan(refusal)

        assert (replaced.fits, replaced.plan_json, replaced.budget_bytes) == (
            False,
            None,
            600 << 20,
        )
        assert (replaced.shortfall_bytes, replaced.message, replaced.oom_count) == (
            40 << 20,
            "needs 40 MiB more",
            1,
        )
        assert replaced.updated_at > first.updated_at
        assert storage.list_node_plans() == [replaced]

    def test_plans_are_listed_by_job_and_node_and_filtered(self, storage: SqlStorage) -> None:
        jobs = [_job(storage), _job(storage)]
        nodes = [_node(storage, "a"), _node(storage, "b", XU4)]
        for job in jobs:
            for node in nodes:
                storage.put_node_plan(_plan(job.id, node.id))
        expected = sorted((job.id, node.id) for job in jobs for node in nodes)

        def keys(**filters: str) -> list[tuple[str, str]]:
            return [(plan.job_id, plan.node_id) for plan in storage.list_node_plans(**filters)]

        assert keys() == expected
        assert keys(job_id=jobs[1].id) == [key for key in expected if key[0] == jobs[1].id]
        assert keys(node_id=nodes[0].id) == [key for key in expected if key[1] == nodes[0].id]
        assert keys(job_id=jobs[0].id, node_id=nodes[1].id) == [(jobs[0].id, nodes[1].id)]

    def test_a_plan_for_an_unknown_job_or_node_is_not_found(self, storage: SqlStorage) -> None:
        job, node = _job(storage), _node(storage)

        with pytest.raises(StorageNotFound, match="job"):
            storage.put_node_plan(_plan("missing", node.id))
        with pytest.raises(StorageNotFound, match="node"):
            storage.put_node_plan(_plan(job.id, "missing"))
        assert storage.get_node_plan(job.id, node.id) is None
        assert storage.list_node_plans() == []


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
