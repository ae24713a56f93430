"""One simulated board of ``edgefleet bench aggregation``: the real gRPC client, and no torch.

It does what an agent does up to the upload, with numpy in place of training: register, pull
until the train task comes (answering a profile task, should it get one, with the real profile
the bench process measured), download the round's global weights, make a random delta with the
same tensor names, shapes and dtypes, and serialize it with safetensors. Everything an upload
needs is built before the worker says it is ready (the SHA-256 header, the chunk messages), so
that after the release only the transfer runs: what is timed is the coordinator's work, not a
board's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from safetensors.numpy import load, save

from edgefleet.fleet_bench.coordinator_process import ENROLLMENT_ENV
from edgefleet.fleet_bench.processes import (
    BenchError,
    emit,
    wait_for_release,
    wait_until_dismissed,
)
from node_agent.backoff import Backoff
from node_agent.client import FleetClient
from protos.edgefleet.v1 import common_pb2, fleet_pb2

DELTA_SCALE = 1e-3
"""Standard deviation of a simulated update: small, like one round of local SGD."""
_GIB = 1 << 30
_ABANDONED = 3
_BUSY_BASE_S = 0.25
_BUSY_CAP_S = 2.0


def board_hardware(memory_budget_bytes: int) -> common_pb2.Hardware:
    """Every simulated board states the same hardware, so one plan serves them all."""
    return common_pb2.Hardware(
        ram_bytes=2 * memory_budget_bytes,
        memory_budget_bytes=memory_budget_bytes,
        num_cores=4,
        cpu_model="simulated board",
        arch="x86_64",
        torch_version="",
        runtime_baseline_bytes=_GIB // 2,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="update-client")
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--hardware-class", required=True)
    parser.add_argument("--memory-budget-bytes", type=int, required=True)
    parser.add_argument("--profile", type=Path, required=True)
    parser.add_argument("--num-samples", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    with grpc.insecure_channel(args.coordinator) as channel:
        client = FleetClient(channel, timeout_s=args.timeout_s)
        client.register(
            os.environ[ENROLLMENT_ENV],
            board_hardware(args.memory_budget_bytes),
            node_name=args.node_name,
            hardware_class=args.hardware_class,
        )
        task, profiled = _train_task(client, args.profile, args.poll_s, args.timeout_s)
        train = task.train
        weights = client.download_weights(train.job_id, train.round)
        update = _delta(weights, np.random.default_rng(args.seed))
        del weights
        messages = client.update_messages(
            task.task_id, train.job_id, train.round, update, num_samples=args.num_samples
        )
        emit(
            "ready",
            node_id=client.node_id,
            update_bytes=len(update),
            chunk_bytes=client.chunk_bytes,
            num_chunks=len(messages) - 1,
            profiled=profiled,
        )
        del update
        if not wait_for_release():
            return _ABANDONED
        cpu_at_release = time.process_time()
        response, busy_refusals = upload_until_taken(client, messages, args.timeout_s)
        answered = time.monotonic()
        cpu_s = time.process_time() - cpu_at_release
        emit(
            "result",
            node_id=client.node_id,
            accepted=response.accepted,
            rejection=common_pb2.ErrorCode.Name(response.rejection.code)
            if response.HasField("rejection")
            else "",
            message=response.rejection.message,
            received_bytes=response.received_bytes,
            answered_monotonic_s=answered,
            cpu_s=cpu_s,
            busy_refusals=busy_refusals,
            imported_torch="torch" in sys.modules,
        )
        # Exiting (closing the channel, freeing memory) is work that would compete with the
        # round while it is still timed: wait for the bench to say it is over.
        wait_until_dismissed()
    return 0


def upload_until_taken(
    client: FleetClient, messages: list[fleet_pb2.UploadUpdateRequest], timeout_s: float
) -> tuple[fleet_pb2.UploadUpdateResponse, int]:
    """Upload as an agent does: refused as busy (``UNAVAILABLE``), ask again after a backoff.

    More boards than the coordinator's upload threads (``handler_threads`` - 16) get refusals;
    how many is part of the result.
    """
    backoff = Backoff(base_s=_BUSY_BASE_S, cap_s=_BUSY_CAP_S)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.upload_update_messages(messages), backoff.attempts
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        time.sleep(backoff.next_wait_s())


def _train_task(
    client: FleetClient, profile_path: Path, poll_s: float, timeout_s: float
) -> tuple[fleet_pb2.PullTaskResponse, bool]:
    """The train task, once the coordinator has one for this board; and whether it profiled."""
    profiled = False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = client.pull_task()
        kind = task.WhichOneof("task")
        if kind == "train":
            return task, profiled
        if kind == "profile":
            _answer_profile(client, task, profile_path)
            profiled = True
            continue
        # Setup is not timed: pull more often than told, so the round starts sooner.
        time.sleep(min(task.none.retry_after_s, poll_s))
    raise BenchError(f"no train task within {timeout_s:.0f} s")


def _answer_profile(
    client: FleetClient, task: fleet_pb2.PullTaskResponse, profile_path: Path
) -> None:
    measured = fleet_pb2.UploadProfileRequest.FromString(profile_path.read_bytes())
    asked = task.profile
    wanted = {(batch, size) for batch in asked.batch_sizes for size in asked.image_sizes}
    have = {(profile.batch_size, profile.image_size) for profile in measured.profiles}
    if (
        asked.model_name != measured.model_name
        or asked.num_classes != measured.num_classes
        or not wanted <= have
    ):
        raise BenchError(
            f"the coordinator asked for a profile of {asked.model_name} "
            f"({asked.num_classes} classes) at (batch, image) {sorted(wanted)}; the bench "
            f"measured {measured.model_name} ({measured.num_classes} classes) at {sorted(have)}"
        )
    response = client.upload_profile(
        task.task_id,
        measured.model_name,
        [p for p in measured.profiles if (p.batch_size, p.image_size) in wanted],
        parameter_bytes=measured.parameter_bytes,
        buffer_bytes=measured.buffer_bytes,
        num_classes=measured.num_classes,
        allocator_overhead_fraction=measured.allocator_overhead_fraction
        if measured.HasField("allocator_overhead_fraction")
        else None,
        allocator_overhead_bytes=measured.allocator_overhead_bytes,
    )
    if not response.accepted:
        raise BenchError(f"the coordinator refused the profile: {response.rejection.message}")


def _delta(weights: bytes, rng: np.random.Generator) -> bytes:
    """A random update shaped like ``weights``: small floats; integer tensors copied."""
    delta: dict[str, np.ndarray] = {}
    for name, array in load(weights).items():
        if array.dtype.kind == "f":
            noise = rng.standard_normal(array.shape, dtype=np.float32) * np.float32(DELTA_SCALE)
            delta[name] = noise.astype(array.dtype, copy=False)
        else:
            # Counters such as num_batches_tracked: the coordinator keeps the global value.
            delta[name] = array
    data: bytes = save(delta)
    return data
