"""Real agent processes against a real coordinator: jobs to the end, failures on either side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc

from protos.edgefleet.v1 import fleet_pb2, jobs_pb2, jobs_pb2_grpc
from tests.integration.node_agent.agents import (
    board_folder,
    job_fields,
    start_agent,
    student_weights,
)
from tests.integration.orchestrator.fleet import (
    ADMIN,
    Fleet,
    coordinator,
    server_of,
    wait_for,
)

_FAST = {"tick_s": 0.05, "idle_pull_interval_s": 0.2, "heartbeat_timeout_s": 15.0}


def _nodes(fleet: object) -> list[jobs_pb2.Node]:
    return list(fleet.jobs.ListNodes(jobs_pb2.ListNodesRequest(), metadata=ADMIN).nodes)  # type: ignore[attr-defined]


def test_two_agents_run_a_job_to_the_end(tmp_path: Path) -> None:
    with coordinator(tmp_path / "coordinator", **_FAST) as fleet:
        address = server_of(fleet).address
        agents = [
            start_agent(
                board_folder(tmp_path, f"pi-{i}", seed=i), address, "--memory-budget", "3GiB"
            )
            for i in range(2)
        ]
        try:
            job = fleet.submit(student_weights(), **job_fields())
            wait_for(
                lambda: (
                    fleet.get(job.job_id).state != jobs_pb2.JOB_STATE_PENDING
                    and fleet.get(job.job_id).state != jobs_pb2.JOB_STATE_RUNNING
                ),
                timeout_s=240,
                what="the job to end",
            )
            final = fleet.get(job.job_id)
            events = fleet.events(job.job_id)
            nodes = _nodes(fleet)
        finally:
            codes = [agent.stop() for agent in agents]
    logs = [agent.output() for agent in agents]

    assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED, (final.message, logs)
    assert final.num_rounds_completed == 2
    accepted = [e for e in events if e.HasField("update_received") and e.update_received.accepted]
    assert len(accepted) == 4
    assert codes == [0, 0]
    assert all("1 frames skipped" in log for log in logs)
    assert all("batch 8 x 1, 2 steps" in log for log in logs)
    assert {node.hardware_class for node in nodes} == {"test-board"}


def test_a_wrong_enrollment_token_is_a_clear_error(tmp_path: Path) -> None:
    with coordinator(tmp_path / "coordinator", **_FAST) as fleet:
        agent = start_agent(
            board_folder(tmp_path, "pi-0"), server_of(fleet).address, token="wrong-token"
        )
        code = agent.process.wait(timeout=120)

    assert code == 2
    assert "refused the enrollment token" in agent.output()
    assert "Traceback" not in agent.output()


def test_a_board_near_its_budget_is_replanned_with_a_smaller_peak(tmp_path: Path) -> None:
    budget = 1200 << 20
    with coordinator(tmp_path / "coordinator", **_FAST) as fleet:
        # A guard below the process's own baseline: the first pass trips it, as a board near
        # its budget would, and the agent reports it instead of waiting for the kernel.
        agent = start_agent(
            board_folder(tmp_path, "pi-0"),
            server_of(fleet).address,
            "--memory-budget",
            str(budget),
            "--memory-margin",
            "0.45",
        )
        try:
            job = fleet.submit(
                student_weights(), **job_fields(min_nodes=1, num_rounds=3, batch_size=0)
            )

            def out_of_memory() -> list[jobs_pb2.JobEvent]:
                return [
                    e
                    for e in fleet.events_so_far(job.job_id)
                    if e.HasField("node_failed")
                    and e.node_failed.kind == fleet_pb2.FAILURE_KIND_OUT_OF_MEMORY
                ]

            wait_for(lambda: bool(out_of_memory()), timeout_s=240, what="an out-of-memory report")
            wait_for(
                lambda: any(p.plan.budget_bytes < budget for n in _nodes(fleet) for p in n.plans),
                timeout_s=60,
                what="a new plan",
            )
            replanned = _nodes(fleet)[0].plans[0]
        finally:
            agent.stop()

    assert replanned.fits
    assert replanned.plan.predicted_peak_bytes < replanned.plan.budget_bytes < budget
    assert "passed the guard" in agent.output()


def test_agent_cli_rejects_a_bad_address(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "edgefleet.cli", "agent", "run", "--coordinator", "nowhere"]
    command += ["--enrollment-token", "x" * 12, "--data-dir", str(tmp_path)]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 2
    assert "coordinator must be HOST:PORT" in completed.stderr


def test_an_agent_killed_mid_round_leaves_the_round_to_its_quorum_and_rejoins(
    tmp_path: Path,
) -> None:
    with coordinator(tmp_path / "coordinator", **_FAST) as fleet:
        address = server_of(fleet).address
        folders = [board_folder(tmp_path, f"pi-{i}", seed=i) for i in range(3)]
        agents = [start_agent(folder, address, "--memory-budget", "3GiB") for folder in folders]
        try:
            job = fleet.submit(
                student_weights(), **job_fields(min_nodes=2, num_rounds=2, local_steps=300)
            )
            wait_for(
                lambda: any(e.HasField("round_started") for e in fleet.events_so_far(job.job_id)),
                timeout_s=240,
                what="round 0",
            )
            agents[2].kill()
            wait_for(
                lambda: any(e.HasField("round_completed") for e in fleet.events_so_far(job.job_id)),
                timeout_s=240,
                what="round 0 to close",
            )
            agents[2] = start_agent(folders[2], address, "--memory-budget", "3GiB")
            wait_for(
                lambda: fleet.get(job.job_id).state == jobs_pb2.JOB_STATE_SUCCEEDED,
                timeout_s=300,
                what="the job to end",
            )
            events = fleet.events(job.job_id)
            nodes = _nodes(fleet)
        finally:
            for agent in agents:
                agent.stop()

    first = next(e.round_completed for e in events if e.HasField("round_completed"))
    assert first.outcome == jobs_pb2.ROUND_OUTCOME_QUORUM and first.num_updates == 2
    # The restarted agent is the same node: three boards, not four.
    assert len(nodes) == 3
    assert "resuming as node" in agents[2].output()


def test_a_coordinator_restarted_mid_round_loses_no_acknowledged_update(tmp_path: Path) -> None:
    from tests.integration.orchestrator.test_restart import coordinator_process

    port = _free_port()
    data_dir = tmp_path / "coordinator"
    folders = [board_folder(tmp_path, f"pi-{i}", seed=i) for i in range(2)]
    with coordinator_process(data_dir, tmp_path / "first.log", port=port) as (process, address):
        agents = [start_agent(folder, address, "--memory-budget", "3GiB") for folder in folders]
        with grpc.insecure_channel(address) as channel:
            fleet = Fleet(None, channel, jobs_pb2_grpc.JobsServiceStub(channel))
            job = fleet.submit(
                student_weights(), **job_fields(min_nodes=2, num_rounds=3, local_steps=100)
            )
            wait_for(
                lambda: any(
                    e.HasField("update_received") and e.update_received.accepted
                    for e in fleet.events_so_far(job.job_id)
                ),
                timeout_s=240,
                what="an acknowledged update",
            )
            acknowledged = [
                (e.update_received.round, e.update_received.node_id)
                for e in fleet.events_so_far(job.job_id)
                if e.HasField("update_received") and e.update_received.accepted
            ]
        process.kill()
        process.wait(timeout=30)
    try:
        with (
            coordinator_process(data_dir, tmp_path / "second.log", port=port) as (_, address),
            grpc.insecure_channel(address) as channel,
        ):
            fleet = Fleet(None, channel, jobs_pb2_grpc.JobsServiceStub(channel))
            wait_for(
                lambda: fleet.get(job.job_id).state == jobs_pb2.JOB_STATE_SUCCEEDED,
                timeout_s=300,
                what="the job to end after the restart",
            )
            events = fleet.events(job.job_id)
    finally:
        for agent in agents:
            agent.stop()

    accepted = {
        (e.update_received.round, e.update_received.node_id)
        for e in events
        if e.HasField("update_received") and e.update_received.accepted
    }
    assert set(acknowledged) <= accepted
    completed = [e.round_completed for e in events if e.HasField("round_completed")]
    assert [c.round for c in completed] == [0, 1, 2]
    assert sum(c.num_updates for c in completed) == len(accepted)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
