"""The jobs API on a real coordinator: submit, get, list, cancel, and their errors."""

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from orchestrator.config import Address, CoordinatorConfig
from orchestrator.server import running
from protos.edgefleet.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc
from tests.integration.orchestrator.fleet import coordinator, model_bytes, weights

ADMIN = [("authorization", "Bearer admin-secret")]


_DIGEST = ""


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[jobs_pb2_grpc.JobsServiceStub]:
    global _DIGEST
    with coordinator(tmp_path) as fleet:
        _DIGEST = fleet.upload_weights(model_bytes(weights()))
        yield fleet.jobs


def _spec(**changes: object) -> jobs_pb2.JobSpec:
    fields: dict[str, object] = {
        "initial_weights_sha256_hex": _DIGEST,
        "name": "pole cameras",
        "student_model": "mobilenet_v2",
        "teacher_model": "resnet50",
        "image_size": 64,
        "num_rounds": 3,
        "local_steps": 5,
        "optimizer": common_pb2.OPTIMIZER_SGD,
        "learning_rate": 0.01,
        "node_fraction": 0.5,
        "min_nodes": 2,
        "round_deadline_s": 120,
        "aggregation": jobs_pb2.AGGREGATION_RULE_MEDIAN,
    }
    fields.update(changes)
    return jobs_pb2.JobSpec(**fields)  # type: ignore[arg-type]


def test_submit_then_get_returns_the_same_spec(jobs: jobs_pb2_grpc.JobsServiceStub) -> None:
    submitted = jobs.SubmitJob(jobs_pb2.SubmitJobRequest(spec=_spec()), metadata=ADMIN).job

    fetched = jobs.GetJob(jobs_pb2.GetJobRequest(job_id=submitted.job_id), metadata=ADMIN).job

    assert fetched.state == jobs_pb2.JOB_STATE_PENDING
    assert fetched.spec.student_model == "mobilenet_v2"
    assert fetched.spec.batch_size == 0  # the largest that fits each board
    assert fetched.spec.aggregation == jobs_pb2.AGGREGATION_RULE_MEDIAN
    assert fetched.spec.min_nodes == 2
    assert fetched.spec == submitted.spec
    assert fetched.job_id == submitted.job_id


def test_invalid_spec_names_the_field(jobs: jobs_pb2_grpc.JobsServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        jobs.SubmitJob(jobs_pb2.SubmitJobRequest(spec=_spec(node_fraction=1.5)), metadata=ADMIN)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "fraction_per_round" in (caught.value.details() or "")


def test_list_pages_newest_first_and_filters(jobs: jobs_pb2_grpc.JobsServiceStub) -> None:
    ids = [
        jobs.SubmitJob(
            jobs_pb2.SubmitJobRequest(spec=_spec(name=f"j{i}")), metadata=ADMIN
        ).job.job_id
        for i in range(3)
    ]
    jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=ids[0]), metadata=ADMIN)

    first = jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=2), metadata=ADMIN)
    second = jobs.ListJobs(
        jobs_pb2.ListJobsRequest(page_size=2, page_token=first.next_page_token), metadata=ADMIN
    )
    cancelled = jobs.ListJobs(
        jobs_pb2.ListJobsRequest(state=jobs_pb2.JOB_STATE_CANCELLED), metadata=ADMIN
    )

    assert [j.job_id for j in first.jobs] + [j.job_id for j in second.jobs] == ids[::-1]
    assert second.next_page_token == ""
    assert [j.job_id for j in cancelled.jobs] == [ids[0]]


def test_cancel_twice_is_refused(jobs: jobs_pb2_grpc.JobsServiceStub) -> None:
    job_id = jobs.SubmitJob(jobs_pb2.SubmitJobRequest(spec=_spec()), metadata=ADMIN).job.job_id

    cancelled = jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), metadata=ADMIN).job
    with pytest.raises(grpc.RpcError) as caught:
        jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), metadata=ADMIN)

    assert cancelled.state == jobs_pb2.JOB_STATE_CANCELLED
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("metadata", "status"),
    [
        ([("authorization", "Bearer enroll-secret")], grpc.StatusCode.PERMISSION_DENIED),
        ([], grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_admin_token_required(
    jobs: jobs_pb2_grpc.JobsServiceStub, metadata: list[tuple[str, str]], status: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=metadata)

    assert caught.value.code() is status


def test_unknown_job_is_not_found(jobs: jobs_pb2_grpc.JobsServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        jobs.GetJob(jobs_pb2.GetJobRequest(job_id="no-such-job"), metadata=ADMIN)

    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_list_nodes_shows_hardware_and_liveness(tmp_path: Path) -> None:
    from protos.edgefleet.v1 import fleet_pb2, fleet_pb2_grpc

    config = CoordinatorConfig(
        data_dir=tmp_path,
        enrollment_token="enroll-secret",
        admin_token="admin-secret",
        listen=Address("127.0.0.1", 0),
    )
    hardware = common_pb2.Hardware(
        ram_bytes=1 << 30,
        num_cores=4,
        cpu_model="Cortex-A53",
        arch="aarch64",
        torch_version="2.9.1",
        runtime_baseline_bytes=300 << 20,
    )
    with running(config, grace_s=0.1) as server, grpc.insecure_channel(server.address) as channel:
        fleet = fleet_pb2_grpc.FleetServiceStub(channel)
        for name in ("pi-1", "pi-2"):
            fleet.Register(
                fleet_pb2.RegisterRequest(
                    enrollment_token="enroll-secret", hardware=hardware, node_name=name
                )
            )
        jobs = jobs_pb2_grpc.JobsServiceStub(channel)

        everything = jobs.ListNodes(jobs_pb2.ListNodesRequest(), metadata=ADMIN).nodes
        other_class = jobs.ListNodes(
            jobs_pb2.ListNodesRequest(hardware_class="x86_64/other/8gib"), metadata=ADMIN
        ).nodes

    assert sorted(node.node_name for node in everything) == ["pi-1", "pi-2"]
    assert all(node.alive for node in everything)
    assert everything[0].hardware.ram_bytes == 1 << 30
    assert everything[0].hardware_class == "aarch64/cortex-a53/1gib"
    assert list(other_class) == []


def test_every_jobs_method_refuses_a_wrong_admin_token_before_any_work(
    jobs: jobs_pb2_grpc.JobsServiceStub,
) -> None:
    wrong = [("authorization", "Bearer not-the-admin")]

    def upload() -> Iterator[jobs_pb2.UploadWeightsRequest]:
        yield jobs_pb2.UploadWeightsRequest()

    calls = {
        "SubmitJob": lambda m: jobs.SubmitJob(jobs_pb2.SubmitJobRequest(spec=_spec()), metadata=m),
        "GetJob": lambda m: jobs.GetJob(jobs_pb2.GetJobRequest(job_id="x"), metadata=m),
        "ListJobs": lambda m: jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=m),
        "CancelJob": lambda m: jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id="x"), metadata=m),
        "WatchJob": lambda m: list(jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id="x"), metadata=m)),
        "ListNodes": lambda m: jobs.ListNodes(jobs_pb2.ListNodesRequest(), metadata=m),
        "UploadWeights": lambda m: jobs.UploadWeights(upload(), metadata=m),
        "DownloadModel": lambda m: list(
            jobs.DownloadModel(jobs_pb2.DownloadModelRequest(job_id="x"), metadata=m)
        ),
    }
    codes = {}
    for name, call in calls.items():
        for metadata in (wrong, []):
            with pytest.raises(grpc.RpcError) as caught:
                call(metadata)
            codes[name, bool(metadata)] = caught.value.code()

    assert set(codes.values()) == {grpc.StatusCode.PERMISSION_DENIED}
    assert len(codes) == 2 * len(jobs_pb2.DESCRIPTOR.services_by_name["JobsService"].methods)
    assert jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=ADMIN).jobs == []
