"""Many simulated idle boards in one process for ``edgefleet bench fleet-api`` (grpc.aio, no torch).

Each board registers (not timed) and pulls once to learn the coordinator's idle cadence; after
the release it heartbeats and pulls as a real agent between tasks does: each call waits the time
the coordinator named in its last answer (``HeartbeatResponse.next_heartbeat_s``,
``NoTask.retry_after_s``), and each board starts at a random phase within those intervals so the
fleet does not fire in step. Every call's latency is measured here, on the client side, from
just before the call to its answer; a call that fails counts as an error under its status code.

One event loop drives hundreds of boards, each with its own connection (its own channel and
subchannel pool, as separate boards would have), so a few processes load the coordinator while
using little of the CPU it shares with them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from grpc import aio

from edgefleet.fleet_bench.coordinator_process import ENROLLMENT_ENV
from edgefleet.fleet_bench.processes import emit, wait_for_release
from edgefleet.fleet_bench.update_client import board_hardware
from protos.edgefleet.v1 import fleet_pb2, fleet_pb2_grpc

Response = TypeVar("Response")
HEARTBEAT = "heartbeat"
PULL_TASK = "pull_task"
_MEMORY_BUDGET_BYTES = 1 << 30
_REGISTER_CONCURRENCY = 16
_DRAIN_S = 30.0
_ABANDONED = 3
# Each board gets its own connection, as real boards would, instead of sharing one.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@dataclass
class _Board:
    stub: fleet_pb2_grpc.FleetServiceStub
    channel: aio.Channel
    node_id: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    heartbeat_s: float = 0.0
    pull_s: float = 0.0


@dataclass
class _Tally:
    latencies_ms: dict[str, list[float]] = field(
        default_factory=lambda: {HEARTBEAT: [], PULL_TASK: []}
    )
    errors: Counter[str] = field(default_factory=Counter)
    tasks: int = 0
    """Pulls that were answered with a task (none is expected: no job is submitted)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="api-client")
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--first-index", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--hardware-class", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=10.0)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    boards = [
        _Board(stub=fleet_pb2_grpc.FleetServiceStub(channel), channel=channel)
        for channel in (
            aio.insecure_channel(args.coordinator, options=_OWN_CONNECTION)
            for _ in range(args.nodes)
        )
    ]
    try:
        limit = asyncio.Semaphore(_REGISTER_CONCURRENCY)
        await asyncio.gather(
            *(_register(board, args.first_index + i, args, limit) for i, board in enumerate(boards))
        )
        emit("ready", nodes=len(boards))
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, wait_for_release):
            return _ABANDONED
        tally = _Tally()
        cpu_at_start = time.process_time()
        started = time.monotonic()
        ends = started + args.seconds
        rng = random.Random(args.seed)
        runs = [_simulate(board, tally, started, ends, rng, args.timeout_s) for board in boards]
        await asyncio.wait_for(asyncio.gather(*runs), args.seconds + _DRAIN_S)
        emit(
            "result",
            latencies_ms=tally.latencies_ms,
            errors=dict(tally.errors),
            tasks=tally.tasks,
            window_s=time.monotonic() - started,
            cpu_s=time.process_time() - cpu_at_start,
            imported_torch="torch" in sys.modules,
        )
        return 0
    finally:
        await asyncio.gather(*(board.channel.close() for board in boards))


async def _register(
    board: _Board, index: int, args: argparse.Namespace, limit: asyncio.Semaphore
) -> None:
    async with limit:
        registered = await board.stub.Register(
            fleet_pb2.RegisterRequest(
                enrollment_token=os.environ[ENROLLMENT_ENV],
                hardware=board_hardware(_MEMORY_BUDGET_BYTES),
                node_name=f"api-board-{index:05d}",
                hardware_class=args.hardware_class,
            ),
            timeout=args.timeout_s,
        )
        board.node_id = registered.node_id
        board.metadata = (("authorization", f"Bearer {registered.node_credential}"),)
        board.heartbeat_s = registered.heartbeat_interval_s
        # One pull, untimed, to learn the idle cadence the coordinator asks of its boards.
        first = await board.stub.PullTask(
            fleet_pb2.PullTaskRequest(node_id=board.node_id),
            metadata=board.metadata,
            timeout=args.timeout_s,
        )
        board.pull_s = first.none.retry_after_s if first.HasField("none") else 1.0


async def _simulate(
    board: _Board, tally: _Tally, started: float, ends: float, rng: random.Random, timeout_s: float
) -> None:
    next_beat = started + rng.uniform(0, board.heartbeat_s)
    next_pull = started + rng.uniform(0, board.pull_s)
    while min(next_beat, next_pull) < ends:
        beat = next_beat <= next_pull
        await asyncio.sleep(max((next_beat if beat else next_pull) - time.monotonic(), 0))
        if beat:
            response = await _call(
                tally,
                HEARTBEAT,
                lambda: board.stub.Heartbeat(
                    fleet_pb2.HeartbeatRequest(node_id=board.node_id),
                    metadata=board.metadata,
                    timeout=timeout_s,
                ),
            )
            if response is not None:
                board.heartbeat_s = response.next_heartbeat_s
            next_beat = time.monotonic() + board.heartbeat_s
        else:
            pulled = await _call(
                tally,
                PULL_TASK,
                lambda: board.stub.PullTask(
                    fleet_pb2.PullTaskRequest(node_id=board.node_id),
                    metadata=board.metadata,
                    timeout=timeout_s,
                ),
            )
            if pulled is not None:
                if pulled.HasField("none"):
                    board.pull_s = pulled.none.retry_after_s
                else:
                    tally.tasks += 1
            next_pull = time.monotonic() + board.pull_s


async def _call(
    tally: _Tally, method: str, call: Callable[[], Awaitable[Response]]
) -> Response | None:
    started = time.perf_counter()
    try:
        response = await call()
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, aio.AioRpcError) else grpc.StatusCode.UNKNOWN
        tally.errors[f"{method}:{code.name}"] += 1
        return None
    tally.latencies_ms[method].append((time.perf_counter() - started) * 1e3)
    return response
