"""Profiles, plans and rounds on a real coordinator, driven by real gRPC clients."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from safetensors.numpy import load

from orchestrator.planning import MemoryModelPayload
from orchestrator.storage import SqlStorage
from protos.edgefleet.v1 import common_pb2, fleet_pb2, jobs_pb2
from tests.integration.orchestrator.fleet import (
    ADMIN,
    MIB,
    answer_profile,
    chain_profile,
    config_for,
    constant_delta,
    coordinator,
    model_bytes,
    pull_each,
    pull_until,
    train,
    wait_for,
    weights,
)


def test_a_board_without_a_memory_model_is_asked_to_profile_then_planned(tmp_path: Path) -> None:
    with coordinator(tmp_path) as fleet:
        board = fleet.board("pi-1")
        job = fleet.submit(model_bytes(weights()), min_nodes=2)

        task = pull_until(board, "profile")
        profile = task.profile
        answer_profile(board, task)
        wait_for(
            lambda: any(
                node.plans
                for node in fleet.jobs.ListNodes(jobs_pb2.ListNodesRequest(), metadata=ADMIN).nodes
            ),
            what="a plan",
        )
        node = fleet.jobs.ListNodes(jobs_pb2.ListNodesRequest(), metadata=ADMIN).nodes[0]
        pending = fleet.get(job.job_id)

    assert profile.model_name == "tiny"
    assert list(profile.batch_sizes) == [1, 2]
    assert list(profile.image_sizes) == [16, 32]
    assert [(m.model_name, m.image_size, m.state) for m in node.memory_models] == [
        ("tiny", 32, jobs_pb2.MEMORY_MODEL_STATE_READY)
    ]
    plan = node.plans[0]
    assert plan.job_id == job.job_id and plan.fits
    assert plan.plan.batch_size >= 1
    assert plan.plan.predicted_peak_bytes <= plan.plan.budget_bytes == 400 * MIB
    assert plan.plan.schedule[-1].startswith("Bwd")
    # One board planned, two needed: the job waits and says so.
    assert pending.state == jobs_pb2.JOB_STATE_PENDING
    assert "1 of 2" in pending.message


def test_a_board_too_small_for_the_job_is_reported_not_scheduled(tmp_path: Path) -> None:
    with coordinator(tmp_path) as fleet:
        small = fleet.board("tiny-board", budget_bytes=101 * MIB, hardware_class="tiny")
        fleet.submit(model_bytes(weights()))
        task = pull_until(small, "profile")
        answer_profile(small, task)
        wait_for(
            lambda: any(
                node.plans
                for node in fleet.jobs.ListNodes(jobs_pb2.ListNodesRequest(), metadata=ADMIN).nodes
            ),
            what="a plan",
        )
        plan = fleet.jobs.ListNodes(jobs_pb2.ListNodesRequest(), metadata=ADMIN).nodes[0].plans[0]
        task = small.pull_task()

    assert not plan.fits
    assert plan.shortfall_bytes > 0
    assert plan.message
    assert task.WhichOneof("task") == "none"


def test_a_full_round_with_three_boards_averages_their_updates(tmp_path: Path) -> None:
    start = weights()
    with coordinator(tmp_path) as fleet:
        boards = [fleet.board(f"pi-{i}") for i in range(3)]
        job = fleet.submit(model_bytes(start), min_nodes=3, num_rounds=1)
        tasks = pull_each(boards)
        verdicts = [
            train(board, task, constant_delta(value), num_samples=samples)
            for board, task, value, samples in zip(
                boards, tasks, (1.0, 2.0, 4.0), (1, 1, 2), strict=True
            )
        ]
        events = fleet.events(job.job_id)
        final = fleet.get(job.job_id)
        model = b"".join(
            message.chunk.data
            for message in fleet.jobs.DownloadModel(
                jobs_pb2.DownloadModelRequest(job_id=job.job_id), metadata=ADMIN
            )
            if message.HasField("chunk")
        )

    assert all(v.accepted for v in verdicts)
    assert {t.train.round for t in tasks} == {0}
    assert all(t.train.plan.batch_size == t.train.batch_size >= 1 for t in tasks)
    assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert final.num_rounds_completed == 1
    # FedAvg by sample count: (1·1 + 1·2 + 2·4) / 4 = 2.75 added to every float weight.
    result = load(model)
    np.testing.assert_allclose(result["conv.weight"], start["conv.weight"] + 2.75, rtol=1e-6)
    np.testing.assert_array_equal(result["bn.num_batches_tracked"], start["bn.num_batches_tracked"])
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "state_changed" and kinds[-1] == "state_changed"
    assert kinds.count("round_started") == 1 and kinds.count("update_received") == 3
    completed = next(e.round_completed for e in events if e.HasField("round_completed"))
    assert completed.outcome == jobs_pb2.ROUND_OUTCOME_QUORUM
    assert completed.num_updates == 3
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


def test_quorum_closes_the_round_without_the_silent_board(tmp_path: Path) -> None:
    with coordinator(tmp_path) as fleet:
        boards = [fleet.board(f"pi-{i}") for i in range(3)]
        job = fleet.submit(model_bytes(weights()), min_nodes=2, num_rounds=1)
        tasks = pull_each(boards)
        for board, task in zip(boards[:2], tasks[:2], strict=True):
            assert train(board, task, constant_delta(1.0)).accepted
        wait_for(lambda: fleet.get(job.job_id).state == jobs_pb2.JOB_STATE_SUCCEEDED, what="end")
        late = train(boards[2], tasks[2], constant_delta(1.0))

    assert not late.accepted
    assert late.rejection.code == common_pb2.ERROR_CODE_UPDATE_LATE


def test_the_deadline_closes_a_round_with_what_arrived(tmp_path: Path) -> None:
    with coordinator(tmp_path) as fleet:
        boards = [fleet.board(f"pi-{i}") for i in range(2)]
        job = fleet.submit(model_bytes(weights()), min_nodes=2, num_rounds=1, round_deadline_s=1.5)
        tasks = pull_each(boards)
        assert train(boards[0], tasks[0], constant_delta(1.0)).accepted
        events = fleet.events(job.job_id)

    completed = next(e.round_completed for e in events if e.HasField("round_completed"))
    assert completed.outcome == jobs_pb2.ROUND_OUTCOME_DEADLINE
    assert completed.num_updates == 1
    assert completed.duration_s >= 1.5


def test_duplicate_wrong_shape_and_non_finite_updates_are_rejected(tmp_path: Path) -> None:
    with coordinator(tmp_path) as fleet:
        boards = [fleet.board(f"pi-{i}") for i in range(4)]
        job = fleet.submit(model_bytes(weights()), min_nodes=4, num_rounds=1)
        tasks = pull_each(boards)
        good = train(boards[0], tasks[0], constant_delta(1.0))
        duplicate = train(boards[0], tasks[0], constant_delta(1.0))
        wrong = constant_delta(1.0)
        wrong["conv.weight"] = np.zeros((2, 3), dtype=np.float32)
        wrong_shape = train(boards[1], tasks[1], wrong)
        poisoned = constant_delta(1.0)
        poisoned["head.weight"][0, 0] = math.nan
        non_finite = train(boards[2], tasks[2], poisoned)
        last = train(boards[3], tasks[3], constant_delta(3.0))
        events = fleet.events(job.job_id)

    assert good.accepted and last.accepted
    assert duplicate.rejection.code == common_pb2.ERROR_CODE_UPDATE_DUPLICATE
    assert wrong_shape.rejection.code == common_pb2.ERROR_CODE_UPDATE_WRONG_SHAPE
    assert "conv.weight" in wrong_shape.rejection.message
    assert non_finite.rejection.code == common_pb2.ERROR_CODE_UPDATE_NON_FINITE
    received = [e.update_received for e in events if e.HasField("update_received")]
    assert [r.accepted for r in received] == [True, False, False, False, True]
    completed = next(e.round_completed for e in events if e.HasField("round_completed"))
    # Every selected board answered, two were rejected: the round aggregates the other two.
    assert completed.outcome == jobs_pb2.ROUND_OUTCOME_ALL_REPORTED
    assert completed.num_updates == 2


def test_corrupted_chunks_are_rejected_and_the_board_may_send_again(tmp_path: Path) -> None:
    from protos.transfer import split

    with coordinator(tmp_path) as fleet:
        board = fleet.board("pi-1")
        fleet.submit(model_bytes(weights()), min_nodes=1, num_rounds=1)
        task = pull_until(board, "train")
        data = model_bytes(constant_delta(1.0))
        header = board.update_messages(
            task.task_id, task.train.job_id, task.train.round, data, num_samples=4
        )[0].header
        chunks = list(split(data, 1024))
        chunks[1] = common_pb2.Chunk(
            offset_bytes=chunks[1].offset_bytes, data=b"\0" * len(chunks[1].data)
        )
        corrupted = board.upload_update_messages(
            [fleet_pb2.UploadUpdateRequest(header=header)]
            + [fleet_pb2.UploadUpdateRequest(chunk=c) for c in chunks]
        )
        gap = board.upload_update_messages(
            [
                fleet_pb2.UploadUpdateRequest(header=header),
                *[fleet_pb2.UploadUpdateRequest(chunk=c) for c in split(data, 1024)][1:],
            ]
        )
        retried = train(board, task, constant_delta(1.0))

    assert corrupted.rejection.code == common_pb2.ERROR_CODE_CHECKSUM_MISMATCH
    assert gap.rejection.code == common_pb2.ERROR_CODE_CHECKSUM_MISMATCH
    assert "offset" in gap.rejection.message
    assert retried.accepted


def test_out_of_memory_report_replans_the_board_with_less(tmp_path: Path) -> None:
    with coordinator(tmp_path) as fleet:
        board = fleet.board("pi-1")
        job = fleet.submit(model_bytes(weights()), min_nodes=1, num_rounds=2, batch_size=0)
        first = pull_until(board, "train")
        board.report_failure(
            first.task_id,
            fleet_pb2.FAILURE_KIND_OUT_OF_MEMORY,
            "killed by the kernel",
            job_id=job.job_id,
            observed_peak_bytes=410 * MIB,
        )
        second = pull_until(board, "train")

    assert second.train.round == 1
    assert second.train.plan.budget_bytes < first.train.plan.budget_bytes
    assert second.train.batch_size < first.train.batch_size


def test_out_of_memory_on_one_board_replans_its_whole_class_with_less(tmp_path: Path) -> None:
    with coordinator(tmp_path) as fleet:
        tripped, sibling = fleet.board("pi-1"), fleet.board("pi-2")
        job = fleet.submit(model_bytes(weights()), min_nodes=2, num_rounds=2, batch_size=0)
        first, before = pull_each([tripped, sibling])
        tripped.report_failure(
            first.task_id,
            fleet_pb2.FAILURE_KIND_OUT_OF_MEMORY,
            "peak memory passed the guard",
            job_id=job.job_id,
            observed_peak_bytes=410 * MIB,
        )
        assert train(sibling, before, constant_delta(1.0)).accepted
        after = pull_until(sibling, "train")

    assert after.train.round == 1
    assert after.train.plan.budget_bytes < before.train.plan.budget_bytes
    assert after.train.batch_size < before.train.batch_size


def test_wrong_credentials_get_no_task(tmp_path: Path) -> None:
    import grpc

    with coordinator(tmp_path) as fleet:
        board = fleet.board("pi-1")
        other = fleet.board("pi-2")
        other.credential, stolen = board.credential, other.credential
        caught = []
        try:
            other.pull_task()
        except grpc.RpcError as error:
            caught.append(error.code())
        board.credential = "nonsense"
        try:
            board.pull_task()
        except grpc.RpcError as error:
            caught.append(error.code())

    assert stolen
    assert caught == [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED]


def test_cancel_mid_round_tells_the_boards_and_ends_the_watch(tmp_path: Path) -> None:
    with coordinator(tmp_path) as fleet:
        board = fleet.board("pi-1")
        job = fleet.submit(model_bytes(weights()), num_rounds=3)
        task = pull_each([board])[0]
        fleet.jobs.CancelJob(
            jobs_pb2.CancelJobRequest(job_id=job.job_id, reason="wrong data"), metadata=ADMIN
        )
        beat = board.heartbeat(current_task_id=task.task_id, rss_bytes=123 * MIB)
        late = train(board, task, constant_delta(1.0))
        events = fleet.events(job.job_id)
        resumed = fleet.events(job.job_id, after=events[-2].sequence)

    assert list(beat.cancelled_job_ids) == [job.job_id]
    assert late.rejection.code == common_pb2.ERROR_CODE_UPDATE_LATE
    last = events[-1].state_changed
    assert last.state == jobs_pb2.JOB_STATE_CANCELLED and last.message == "wrong data"
    # A watcher reconnecting after an event sees only what followed it.
    assert [e.sequence for e in resumed] == [events[-1].sequence]


def test_weights_go_only_to_boards_selected_for_the_round(tmp_path: Path) -> None:
    import grpc

    with coordinator(tmp_path) as fleet:
        selected = fleet.board("pi-1")
        job = fleet.submit(model_bytes(weights()), num_rounds=1, min_nodes=1)
        task = pull_each([selected])[0]
        outsider = fleet.board("pi-2", hardware_class="other")
        fetched = selected.download_weights(job.job_id, 0)
        try:
            outsider.download_weights(job.job_id, 0)
            refused = None
        except grpc.RpcError as error:
            refused = error

    assert fetched == model_bytes(weights())
    assert task.train.weights_sha256_hex
    assert refused is not None and refused.code() is grpc.StatusCode.PERMISSION_DENIED


def test_an_unusable_profile_is_refused_with_the_reason(tmp_path: Path) -> None:
    with coordinator(tmp_path) as fleet:
        board = fleet.board("pi-1")
        fleet.submit(model_bytes(weights()))
        task = pull_until(board, "profile")
        only_one = board.upload_profile(
            task.task_id,
            "tiny",
            [chain_profile(1, 16)],
            parameter_bytes=MIB,
            buffer_bytes=0,
            num_classes=10,
        )
        nodes = fleet.jobs.ListNodes(jobs_pb2.ListNodesRequest(), metadata=ADMIN).nodes

    assert not only_one.accepted
    assert "missing (batch size, image size) pairs" in only_one.rejection.message
    # The failed attempt is shown; another attempt is already under way on the class.
    assert nodes[0].memory_models[0].state in (
        jobs_pb2.MEMORY_MODEL_STATE_FAILED,
        jobs_pb2.MEMORY_MODEL_STATE_PROFILING,
    )


def test_an_overhead_the_board_did_not_measure_is_stored_as_unmeasured(tmp_path: Path) -> None:
    with coordinator(tmp_path) as fleet:
        measured, unmeasured = (
            fleet.board("a", hardware_class="a"),
            fleet.board("b", hardware_class="b"),
        )
        fleet.submit(model_bytes(weights()))
        for board, fraction in ((measured, 0.0), (unmeasured, None)):
            task = pull_until(board, "profile")
            profile = task.profile
            response = board.upload_profile(
                task.task_id,
                profile.model_name,
                [chain_profile(b, s) for b in profile.batch_sizes for s in profile.image_sizes],
                parameter_bytes=4 * MIB,
                buffer_bytes=0,
                num_classes=10,
                allocator_overhead_fraction=fraction,
            )
            assert response.accepted, response.rejection.message
    storage = SqlStorage(config_for(tmp_path).database_url)
    try:
        stored = {
            record.hardware_class: MemoryModelPayload.from_json(record.payload_json)
            for record in storage.list_memory_models()
        }
    finally:
        storage.close()

    assert stored["a"].allocator_overhead_fraction == 0.0
    assert stored["b"].allocator_overhead_fraction is None
