"""``edgefleet bench aggregation``: N boards' full-size updates into a real coordinator, timed.

Set-up (not timed): the bench process builds the student with torch and profiles it for real;
starts ``edgefleet coordinator serve`` as its own process (default configuration: fsync on);
uploads the initial weights and submits a one-round FedAvg job that needs all N boards; then
starts N worker processes (``update_client``: grpc, numpy and safetensors, no torch), each of
which registers, is planned from the real memory model, pulls its train task, downloads the
global weights and prepares its update, and says it is ready.

Timed: all N are released together; ``aggregate_s`` runs from the release until the job's
``RoundCompleted`` event reaches the bench process through ``WatchJob``, so it covers every update
streamed in over gRPC, checksummed, stored (fsync), validated, and the round aggregated into the
new model. The coordinator's peak resident memory is its ``VmHWM`` at the end.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from edgefleet.fleet_bench.coordinator_process import (
    ENROLLMENT_ENV,
    Coordinator,
    Tokens,
    running_coordinator,
)
from edgefleet.fleet_bench.proc import machine_cpu_s
from edgefleet.fleet_bench.processes import BenchError, ChildGroup, log_tail
from edgefleet.progress import Report
from protos.edgefleet.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc
from protos.transfer import blob_info, split

DEFAULT_MEMORY_BUDGET_BYTES = 8 << 30
HARDWARE_CLASS = "bench-board"
_ROUND_DEADLINE_S = 24 * 3600.0
"""Far beyond any run: the round must close on its quorum of every board, never on time."""
_RPC_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class AggregationBenchConfig:
    nodes: int
    model: str = "mobilenet_v2"
    image_size: int = 224
    num_classes: int = 1000
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
    """What every simulated board states, large so that every board is planned."""
    setup_timeout_s: float = 1800.0
    timeout_s: float = 600.0
    """Limit of the timed part."""

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"nodes must be at least 1, got {self.nodes}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        if self.memory_budget_bytes < 1 << 30:
            raise ValueError(
                f"memory_budget_bytes must be at least 1 GiB, got {self.memory_budget_bytes}"
            )
        for name in ("setup_timeout_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class AggregationResult:
    nodes: int
    model: str
    image_size: int
    update_bytes: int
    """Size of one update file (safetensors); every board's is the same to a few header bytes."""
    chunk_bytes: int
    aggregate_s: float
    """From the release of all boards to ``RoundCompleted`` at the bench process."""
    upload_s: float
    """From the release to the last board's accepted verdict (all updates stored and checked)."""
    first_verdict_s: float
    median_verdict_s: float
    aggregation_s: float
    """The coordinator's own time for aggregating the round, from its ``RoundCompleted``."""
    coordinator_peak_rss_bytes: int
    coordinator_rss_at_release_bytes: int
    coordinator_cpu_s: float
    """CPU time the coordinator used during the timed part (all its threads)."""
    boards_cpu_s: float
    """CPU time the N board processes used from their release to their verdict."""
    machine_cpu_s: float
    """CPU time the whole machine spent busy during the timed part, all cores."""
    other_cpu_s: float
    """Busy time that was neither the coordinator's nor the boards' (the bench process, the
    kernel's threads, and any other work on the machine: a busy neighbour shows up here)."""
    accepted: int
    busy_refusals: int
    """Uploads the coordinator refused as busy and the boards sent again (past its upload
    threads); 0 while the boards are fewer than ``handler_threads`` - 16."""
    outcome: str
    fsync: bool
    coordinator_loaded_torch: bool
    profile_s: float
    setup_s: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_aggregation_bench(config: AggregationBenchConfig, report: Report) -> AggregationResult:
    from edgefleet.fleet_bench.profiles import student_weights_and_profile

    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgefleet-bench-")))
        report("profiling the student", 0, 1)
        started = time.monotonic()
        weights, profile = student_weights_and_profile(
            config.model, config.image_size, config.num_classes
        )
        profile_path = root / "profile.pb"
        profile_path.write_bytes(profile.SerializeToString())
        profile_s = time.monotonic() - started
        report("profiling the student", 1, 1)

        started = time.monotonic()
        tokens = Tokens.fresh()
        coordinator = stack.enter_context(running_coordinator(root / "coordinator", tokens))
        stack.enter_context(_rpc_failures_explained(coordinator))
        channel = stack.enter_context(grpc.insecure_channel(coordinator.address))
        jobs = jobs_pb2_grpc.JobsServiceStub(channel)
        job_id = _submit(jobs, tokens, weights, config)
        del weights
        group = stack.enter_context(ChildGroup(root))
        for index in range(config.nodes):
            group.start(
                f"board-{index:04d}",
                "update-client",
                [
                    "--coordinator",
                    coordinator.address,
                    "--node-name",
                    f"bench-board-{index:04d}",
                    "--hardware-class",
                    HARDWARE_CLASS,
                    "--memory-budget-bytes",
                    str(config.memory_budget_bytes),
                    "--profile",
                    str(profile_path),
                    "--num-samples",
                    str(8 * (1 + index % 4)),
                    "--seed",
                    str(index),
                    "--timeout-s",
                    str(config.setup_timeout_s),
                ],
                env={ENROLLMENT_ENV: tokens.enrollment},
            )
        ready = group.wait_for(
            "ready", config.setup_timeout_s, lambda done, total: report("boards ready", done, total)
        )
        setup_s = time.monotonic() - started

        watch = jobs.WatchJob(
            jobs_pb2.WatchJobRequest(job_id=job_id),
            metadata=tokens.admin_metadata,
            timeout=config.timeout_s,
        )
        rss_at_release = coordinator.rss_bytes()
        cpu_at_release = coordinator.cpu_s()
        machine_at_release = machine_cpu_s()
        report("round", 0, 1)
        released = time.monotonic()
        group.release()
        completed, completed_at = _round_completed(watch)
        cpu_s = coordinator.cpu_s() - cpu_at_release
        machine_s = machine_cpu_s() - machine_at_release
        report("round", 1, 1)
        results = group.wait_for("result", config.timeout_s)
        group.dismiss()
        # The job ends after its last round's event: the stream ends with its final state.
        for _ in watch:
            pass
        final = jobs.GetJob(
            jobs_pb2.GetJobRequest(job_id=job_id),
            metadata=tokens.admin_metadata,
            timeout=_RPC_TIMEOUT_S,
        ).job
        peak_rss = coordinator.peak_rss_bytes()
        loaded_torch = coordinator.loaded_torch()

    refused = [r for r in results if not r["accepted"]]
    if refused:
        first = refused[0]
        raise BenchError(
            f"{len(refused)} of {config.nodes} updates were refused; the first: "
            f"{first['rejection']}: {first['message']}"
        )
    if completed.num_updates != config.nodes:
        raise BenchError(
            f"the round aggregated {completed.num_updates} updates, not {config.nodes}"
        )
    if final.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        raise BenchError(f"the job ended {jobs_pb2.JobState.Name(final.state)}: {final.message}")
    if any(r["imported_torch"] for r in results):
        raise BenchError("a simulated board imported torch; boards must run without it")
    verdicts_s = sorted(float(str(r["answered_monotonic_s"])) - released for r in results)
    boards_cpu_s = sum(float(str(r["cpu_s"])) for r in results)
    return AggregationResult(
        nodes=config.nodes,
        model=config.model,
        image_size=config.image_size,
        update_bytes=max(int(str(r["update_bytes"])) for r in ready),
        chunk_bytes=int(str(ready[0]["chunk_bytes"])),
        aggregate_s=completed_at - released,
        upload_s=verdicts_s[-1],
        first_verdict_s=verdicts_s[0],
        median_verdict_s=statistics.median(verdicts_s),
        aggregation_s=completed.aggregation_s,
        coordinator_peak_rss_bytes=peak_rss,
        coordinator_rss_at_release_bytes=rss_at_release,
        coordinator_cpu_s=cpu_s,
        boards_cpu_s=boards_cpu_s,
        machine_cpu_s=machine_s,
        other_cpu_s=max(machine_s - cpu_s - boards_cpu_s, 0.0),
        accepted=config.nodes - len(refused),
        busy_refusals=sum(int(str(r["busy_refusals"])) for r in results),
        outcome=jobs_pb2.RoundOutcome.Name(completed.outcome)
        .removeprefix("ROUND_OUTCOME_")
        .lower(),
        # The bench serves with the coordinator's defaults, which flush stored updates to disk.
        fsync=True,
        coordinator_loaded_torch=loaded_torch,
        profile_s=profile_s,
        setup_s=setup_s,
    )


def _submit(
    jobs: jobs_pb2_grpc.JobsServiceStub,
    tokens: Tokens,
    weights: bytes,
    config: AggregationBenchConfig,
) -> str:
    messages = [jobs_pb2.UploadWeightsRequest(header=blob_info(weights))]
    messages += [jobs_pb2.UploadWeightsRequest(chunk=chunk) for chunk in split(weights)]
    uploaded = jobs.UploadWeights(
        iter(messages), metadata=tokens.admin_metadata, timeout=_RPC_TIMEOUT_S
    )
    spec = jobs_pb2.JobSpec(
        name=f"bench aggregation: {config.nodes} x {config.model}",
        student_model=config.model,
        image_size=config.image_size,
        num_rounds=1,
        local_steps=1,
        optimizer=common_pb2.OPTIMIZER_SGD,
        learning_rate=0.01,
        node_fraction=1.0,
        min_nodes=config.nodes,
        round_deadline_s=_ROUND_DEADLINE_S,
        aggregation=jobs_pb2.AGGREGATION_RULE_FEDAVG,
        initial_weights_sha256_hex=uploaded.sha256_hex,
        num_classes=config.num_classes,
    )
    response = jobs.SubmitJob(
        jobs_pb2.SubmitJobRequest(spec=spec),
        metadata=tokens.admin_metadata,
        timeout=_RPC_TIMEOUT_S,
    )
    return str(response.job.job_id)


@contextmanager
def _rpc_failures_explained(coordinator: Coordinator) -> Iterator[None]:
    """A failed call to the coordinator as a ``BenchError`` that shows the coordinator's log."""
    try:
        yield
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else None
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        raise BenchError(
            f"a call to the coordinator failed ({code.name if code else 'error'}: {details}); "
            f"its log ends:\n{log_tail(coordinator.log_path)}"
        ) from None


def _round_completed(
    events: Iterator[jobs_pb2.JobEvent],
) -> tuple[jobs_pb2.RoundCompleted, float]:
    """The round's ``RoundCompleted`` event and when it arrived (``time.monotonic``)."""
    for event in events:
        if event.HasField("round_completed"):
            return event.round_completed, time.monotonic()
        # The round needs every board's update: one refused, it would wait for its deadline.
        if event.HasField("update_received") and not event.update_received.accepted:
            rejection = event.update_received.rejection
            raise BenchError(
                f"the update of node {event.update_received.node_id} was refused: "
                f"{common_pb2.ErrorCode.Name(rejection.code)}: {rejection.message}"
            )
    raise BenchError("the job's events ended without RoundCompleted")
