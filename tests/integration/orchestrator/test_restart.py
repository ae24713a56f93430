"""Killing the coordinator mid-round loses nothing: the job resumes at that round."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
from safetensors.numpy import load

from node_agent.client import FleetClient, receive_weights
from protos.edgefleet.v1 import jobs_pb2, jobs_pb2_grpc
from tests.integration.orchestrator.fleet import (
    ADMIN,
    ADMIN_TOKEN,
    ENROLL,
    MIB,
    Fleet,
    constant_delta,
    hardware,
    model_bytes,
    pull_each,
    train,
    weights,
)


@contextmanager
def coordinator_process(
    data_dir: Path, log: Path, port: int = 0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``edgefleet coordinator serve`` in a process of its own; yields it and its address."""
    env = {**os.environ, "EDGEFLEET_ENROLLMENT_TOKEN": ENROLL, "EDGEFLEET_ADMIN_TOKEN": ADMIN_TOKEN}
    command = [sys.executable, "-m", "edgefleet.cli", "coordinator", "serve"]
    command += ["--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stderr=sink, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        address = ""
        while not address and time.monotonic() < deadline:
            for line in log.read_text().splitlines():
                if "coordinator listening on" in line:
                    address = line.rsplit(" ", 1)[1]
            time.sleep(0.05)
        assert address, log.read_text()
        yield process, address
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_killed_mid_round_the_coordinator_resumes_with_every_acknowledged_update(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "coordinator"
    start = weights()
    with (
        coordinator_process(data_dir, tmp_path / "first.log") as (process, address),
        grpc.insecure_channel(address) as channel,
    ):
        fleet = Fleet(None, channel, jobs_pb2_grpc.JobsServiceStub(channel))
        boards = []
        for i in range(3):
            board = FleetClient(channel, timeout_s=10)
            board.register(ENROLL, hardware(400 * MIB), node_name=f"pi-{i}", hardware_class="pi")
            boards.append(board)
        job = fleet.submit(model_bytes(start), min_nodes=3, num_rounds=2, round_deadline_s=120)
        tasks = pull_each(boards)
        acknowledged = [
            train(b, t, constant_delta(v))
            for b, t, v in zip(boards[:2], tasks[:2], (1.0, 2.0), strict=True)
        ]
        process.kill()
        process.wait(timeout=30)

    with (
        coordinator_process(data_dir, tmp_path / "second.log") as (_, address),
        grpc.insecure_channel(address) as channel,
    ):
        fleet = Fleet(None, channel, jobs_pb2_grpc.JobsServiceStub(channel))
        # The same boards (ids and credentials) on a new connection.
        boards = [
            FleetClient(channel, node_id=b.node_id, credential=b.credential, timeout_s=10)
            for b in boards
        ]
        resumed = fleet.get(job.job_id)
        last = train(boards[2], tasks[2], constant_delta(6.0))
        next_round = pull_each(boards)
        round_one = load(
            receive_weights(
                fleet.jobs.DownloadModel(
                    jobs_pb2.DownloadModelRequest(job_id=job.job_id, version=1), metadata=ADMIN
                )
            )
        )

    assert all(verdict.accepted for verdict in acknowledged)
    assert resumed.state == jobs_pb2.JOB_STATE_RUNNING and resumed.current_round == 0
    assert last.accepted
    assert {task.train.round for task in next_round} == {1}
    # Round 0 averaged all three updates, the two acknowledged before the kill included.
    np.testing.assert_allclose(round_one["conv.weight"], start["conv.weight"] + 3.0, rtol=1e-6)
