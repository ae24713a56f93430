"""A real coordinator on port 0 and real gRPC clients for it, with small synthetic models.

The boards here are test clients (``node_agent.client.FleetClient``) that answer tasks with
synthetic data: profiles of a three-stage chain whose sizes grow exactly as the memory model
assumes, and weight updates made with numpy. The real agent comes with its own tests.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from safetensors.numpy import save

from node_agent.client import FleetClient
from orchestrator.config import Address, CoordinatorConfig
from orchestrator.server import RunningServer, running
from protos.edgefleet.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from protos.transfer import blob_info, split

ENROLL = "enroll-secret"
ADMIN_TOKEN = "admin-secret"
ADMIN = [("authorization", f"Bearer {ADMIN_TOKEN}")]
STAGES = ("conv", "block", "head")
NUM_CLASSES = 10
MIB = 1 << 20


def config_for(data_dir: Path, **changes: object) -> CoordinatorConfig:
    config = CoordinatorConfig(
        data_dir=data_dir,
        enrollment_token=ENROLL,
        admin_token=ADMIN_TOKEN,
        listen=Address("127.0.0.1", 0),
        fsync=False,
        tick_s=0.05,
        idle_pull_interval_s=0.1,
    )
    return replace(config, **changes)  # type: ignore[arg-type]


@dataclass
class Fleet:
    server: RunningServer | None
    """None when the coordinator runs in another process."""
    channel: grpc.Channel
    jobs: jobs_pb2_grpc.JobsServiceStub

    def board(
        self, name: str = "board", budget_bytes: int = 400 * MIB, hardware_class: str = "pi"
    ) -> FleetClient:
        client = FleetClient(self.channel, timeout_s=10.0)
        client.register(
            ENROLL, hardware(budget_bytes), node_name=name, hardware_class=hardware_class
        )
        return client

    def upload_weights(self, data: bytes) -> str:
        messages = [jobs_pb2.UploadWeightsRequest(header=blob_info(data))]
        messages += [jobs_pb2.UploadWeightsRequest(chunk=c) for c in split(data, 4096)]
        response = self.jobs.UploadWeights(iter(messages), metadata=ADMIN, timeout=10)
        return str(response.sha256_hex)

    def submit(self, weights: bytes, **changes: object) -> jobs_pb2.Job:
        digest = self.upload_weights(weights)
        request = jobs_pb2.SubmitJobRequest(spec=spec(initial_weights_sha256_hex=digest, **changes))
        job: jobs_pb2.Job = self.jobs.SubmitJob(request, metadata=ADMIN, timeout=10).job
        return job

    def get(self, job_id: str) -> jobs_pb2.Job:
        request = jobs_pb2.GetJobRequest(job_id=job_id)
        job: jobs_pb2.Job = self.jobs.GetJob(request, metadata=ADMIN, timeout=10).job
        return job

    def events_so_far(self, job_id: str) -> list[jobs_pb2.JobEvent]:
        """The job's events until now (the stream is cut after a second of silence)."""
        request = jobs_pb2.WatchJobRequest(job_id=job_id)
        found: list[jobs_pb2.JobEvent] = []
        try:
            for event in self.jobs.WatchJob(request, metadata=ADMIN, timeout=1.5):
                found.append(event)
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        return found

    def events(self, job_id: str, after: int = 0) -> list[jobs_pb2.JobEvent]:
        """Every event of a job that has finished (the stream ends with the job)."""
        request = jobs_pb2.WatchJobRequest(job_id=job_id, after_sequence=after)
        return list(self.jobs.WatchJob(request, metadata=ADMIN, timeout=30))


@contextmanager
def coordinator(data_dir: Path, **changes: object) -> Iterator[Fleet]:
    config = config_for(data_dir, **changes)
    with running(config, grace_s=0.1) as server, grpc.insecure_channel(server.address) as channel:
        yield Fleet(server, channel, jobs_pb2_grpc.JobsServiceStub(channel))


def server_of(fleet: Fleet) -> RunningServer:
    assert fleet.server is not None, "this fleet's coordinator runs in this process"
    return fleet.server


def hardware(budget_bytes: int) -> common_pb2.Hardware:
    return common_pb2.Hardware(
        ram_bytes=1 << 30,
        memory_budget_bytes=budget_bytes,
        num_cores=4,
        cpu_model="Cortex-A53",
        arch="aarch64",
        torch_version="2.14.1",
        runtime_baseline_bytes=100 * MIB,
    )


def spec(**changes: object) -> jobs_pb2.JobSpec:
    fields: dict[str, object] = {
        "name": "test job",
        "student_model": "tiny",
        "image_size": 32,
        "num_rounds": 1,
        "local_steps": 2,
        "optimizer": common_pb2.OPTIMIZER_SGD,
        "learning_rate": 0.1,
        "node_fraction": 1.0,
        "min_nodes": 1,
        "round_deadline_s": 30,
        "aggregation": jobs_pb2.AGGREGATION_RULE_FEDAVG,
    }
    fields.update(changes)
    return jobs_pb2.JobSpec(**fields)  # type: ignore[arg-type]


def weights(seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": (rng.standard_normal((8, 3, 3, 3)) * scale).astype(np.float32),
        "head.weight": (rng.standard_normal((NUM_CLASSES, 8)) * scale).astype(np.float32),
        "bn.num_batches_tracked": np.array([seed], dtype=np.int64),
    }


def constant_delta(value: float) -> dict[str, np.ndarray]:
    """An update of ``weights()``: every floating value ``value``, counters unchanged."""
    return {
        name: np.full_like(array, value) if array.dtype.kind == "f" else array
        for name, array in weights().items()
    }


def model_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    return save(tensors)


def chain_profile(batch_size: int, image_size: int) -> fleet_pb2.ChainProfile:
    """Sizes that grow as the memory model assumes: a constant, per sample, per pixel."""
    pixels = batch_size * image_size * image_size
    activations = [12 * pixels, 32 * pixels, 16 * pixels, 4 * NUM_CLASSES * batch_size]
    return fleet_pb2.ChainProfile(
        stage_names=STAGES,
        batch_size=batch_size,
        image_size=image_size,
        saves_output=[True, True, True],
        fw_s=[1e-6 * pixels] * 3,
        bw_s=[2e-6 * pixels] * 3 + [1e-6],
        cw_bytes=activations,
        cbw_bytes=[0, *(2 * a for a in activations[1:])],
        ftmp_bytes=[a // 2 for a in activations[1:]],
        ftmp_nograd_bytes=[a // 2 for a in activations[1:]],
        btmp_bytes=[*activations[1:], 64],
        device="cpu",
    )


def answer_profile(board: FleetClient, task: fleet_pb2.PullTaskResponse) -> None:
    profile = task.profile
    profiles = [
        chain_profile(batch, size) for batch in profile.batch_sizes for size in profile.image_sizes
    ]
    response = board.upload_profile(
        task.task_id,
        profile.model_name,
        profiles,
        parameter_bytes=4 * MIB,
        buffer_bytes=4096,
        num_classes=NUM_CLASSES,
        allocator_overhead_fraction=0.1,
    )
    assert response.accepted, response.rejection.message


def pull_until(
    board: FleetClient, kind: str, timeout_s: float = 20.0
) -> fleet_pb2.PullTaskResponse:
    """Pull until a task of ``kind`` (``profile`` or ``train``) comes; profiles are answered."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = board.pull_task()
        which = task.WhichOneof("task")
        if which == kind:
            return task
        if which == "profile":
            answer_profile(board, task)
            continue
        time.sleep(0.05)
    raise AssertionError(f"no {kind} task within {timeout_s} s")


def pull_each(
    boards: list[FleetClient], kind: str = "train", timeout_s: float = 20.0
) -> list[fleet_pb2.PullTaskResponse]:
    """Pull on every board in turn (answering profile tasks) until each got a ``kind`` task."""
    found: dict[int, fleet_pb2.PullTaskResponse] = {}
    deadline = time.monotonic() + timeout_s
    while len(found) < len(boards) and time.monotonic() < deadline:
        for index, board in enumerate(boards):
            if index in found:
                continue
            task = board.pull_task()
            which = task.WhichOneof("task")
            if which == kind:
                found[index] = task
            elif which == "profile":
                answer_profile(board, task)
        time.sleep(0.02)
    if len(found) < len(boards):
        raise AssertionError(f"{len(boards) - len(found)} boards got no {kind} task")
    return [found[index] for index in range(len(boards))]


def metric_value(metrics_port: int, name: str, labels: dict[str, str]) -> float:
    """The value of sample ``name{labels}`` on the coordinator's metrics endpoint (0 if absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def train(
    board: FleetClient,
    task: fleet_pb2.PullTaskResponse,
    delta: dict[str, np.ndarray],
    num_samples: int = 8,
) -> fleet_pb2.UploadUpdateResponse:
    """Download the round's weights (checked) and upload ``delta`` as the update."""
    train_task = task.train
    board.download_weights(train_task.job_id, train_task.round)
    return board.upload_update(
        task.task_id,
        train_task.job_id,
        train_task.round,
        model_bytes(delta),
        num_samples=num_samples,
        measured_peak_bytes=200 * MIB,
        train_loss=0.5,
        train_duration_s=1.0,
    )


class HeldUpload:
    """An upload that sends its header and a first chunk, then waits for ``go_on``."""

    def __init__(
        self,
        fleet: Fleet,
        board: FleetClient,
        task: fleet_pb2.PullTaskResponse,
        delta: dict[str, np.ndarray],
    ) -> None:
        board.download_weights(task.train.job_id, task.train.round)
        data = model_bytes(delta)
        header = board.update_messages(
            task.task_id, task.train.job_id, task.train.round, data, num_samples=8
        )[0]
        self.first_chunk_sent = threading.Event()
        self.go_on = threading.Event()

        def messages() -> Iterator[fleet_pb2.UploadUpdateRequest]:
            yield header
            yield fleet_pb2.UploadUpdateRequest(
                chunk=common_pb2.Chunk(offset_bytes=0, data=data[:100])
            )
            self.first_chunk_sent.set()
            self.go_on.wait(30)
            yield fleet_pb2.UploadUpdateRequest(
                chunk=common_pb2.Chunk(offset_bytes=100, data=data[100:])
            )

        stub = fleet_pb2_grpc.FleetServiceStub(fleet.channel)
        self.call = stub.UploadUpdate.future(
            messages(), metadata=[("authorization", f"Bearer {board.credential}")]
        )
        assert self.first_chunk_sent.wait(10)

    def finish(self) -> fleet_pb2.UploadUpdateResponse:
        self.go_on.set()
        response: fleet_pb2.UploadUpdateResponse = self.call.result(timeout=20)
        return response
