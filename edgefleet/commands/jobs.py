"""``edgefleet jobs``: the operators' client for the coordinator's jobs API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from edgefleet.commands.output import fail, print_json

app = typer.Typer(help="Submit and follow training jobs.", no_args_is_help=True)

Coordinator = Annotated[
    str, typer.Option("--coordinator", envvar="EDGEFLEET_COORDINATOR", help="HOST:PORT.")
]
AdminToken = Annotated[
    str, typer.Option("--admin-token", envvar="EDGEFLEET_ADMIN_TOKEN", help="Operators' token.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_TIMEOUT_S = 30.0
T = TypeVar("T")


@contextmanager
def _stub(coordinator: str) -> Iterator[Any]:
    import grpc

    from protos.edgefleet.v1 import jobs_pb2_grpc

    with grpc.insecure_channel(coordinator) as channel:
        yield jobs_pb2_grpc.JobsServiceStub(channel)


def _call(method: Callable[..., T], request: object, admin_token: str, coordinator: str) -> T:
    import grpc

    metadata = [("authorization", f"Bearer {admin_token}")]
    try:
        return method(request, metadata=metadata, timeout=_TIMEOUT_S)
    except grpc.RpcError as error:
        code = error.code()
        if code is grpc.StatusCode.UNAVAILABLE:
            fail(f"cannot reach the coordinator at {coordinator}: {error.details()}")
        fail(f"{code.name.lower()}: {error.details()}")


def _message_dict(message: Any) -> dict[str, object]:
    from google.protobuf.json_format import MessageToDict

    data: dict[str, object] = MessageToDict(message, preserving_proto_field_name=True)
    return data


def _echo_job(job: Any) -> None:
    from protos.edgefleet.v1 import jobs_pb2

    state = jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    typer.echo(f"{job.job_id}  {state:<10} {job.spec.student_model} {job.spec.name}")


def _show(job: Any, as_json: bool) -> None:
    if as_json:
        print_json(_message_dict(job))
    else:
        _echo_job(job)


@app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(help="Job file (YAML).")],
    coordinator: Coordinator,
    admin_token: AdminToken,
    as_json: AsJson = False,
) -> None:
    """Submit the job in FILE."""
    from orchestrator.job_spec import JobSpec, JobSpecError
    from orchestrator.servicers.jobs import spec_to_proto
    from protos.edgefleet.v1 import jobs_pb2

    try:
        spec = JobSpec.from_file(file)
    except JobSpecError as exc:
        fail(f"{file}: {exc}")
    with _stub(coordinator) as stub:
        request = jobs_pb2.SubmitJobRequest(spec=spec_to_proto(spec))
        response = _call(stub.SubmitJob, request, admin_token, coordinator)
    _show(response.job, as_json)


@app.command("get")
def get(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    coordinator: Coordinator,
    admin_token: AdminToken,
    as_json: AsJson = False,
) -> None:
    """Show one job."""
    from protos.edgefleet.v1 import jobs_pb2

    with _stub(coordinator) as stub:
        request = jobs_pb2.GetJobRequest(job_id=job_id)
        response = _call(stub.GetJob, request, admin_token, coordinator)
    _show(response.job, as_json)


@app.command("list")
def list_jobs(coordinator: Coordinator, admin_token: AdminToken, as_json: AsJson = False) -> None:
    """List every job, newest first."""
    from protos.edgefleet.v1 import jobs_pb2

    found: list[Any] = []
    token = ""
    with _stub(coordinator) as stub:
        while True:
            request = jobs_pb2.ListJobsRequest(page_token=token)
            response = _call(stub.ListJobs, request, admin_token, coordinator)
            found.extend(response.jobs)
            token = response.next_page_token
            if not token:
                break
    if as_json:
        print_json([_message_dict(job) for job in found])
        return
    for job in found:
        _echo_job(job)


@app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    coordinator: Coordinator,
    admin_token: AdminToken,
    as_json: AsJson = False,
) -> None:
    """Cancel a job that has not finished."""
    from protos.edgefleet.v1 import jobs_pb2

    with _stub(coordinator) as stub:
        request = jobs_pb2.CancelJobRequest(job_id=job_id)
        response = _call(stub.CancelJob, request, admin_token, coordinator)
    _show(response.job, as_json)


nodes_app = typer.Typer(help="The boards the coordinator knows.", no_args_is_help=True)


@nodes_app.command("list")
def list_nodes(
    coordinator: Coordinator,
    admin_token: AdminToken,
    hardware_class: Annotated[str, typer.Option("--hardware-class", help="Only this class.")] = "",
    as_json: AsJson = False,
) -> None:
    """List nodes with their hardware, liveness and memory models."""
    from protos.edgefleet.v1 import jobs_pb2

    with _stub(coordinator) as stub:
        request = jobs_pb2.ListNodesRequest(hardware_class=hardware_class)
        response = _call(stub.ListNodes, request, admin_token, coordinator)
    if as_json:
        print_json([_message_dict(node) for node in response.nodes])
        return
    for node in response.nodes:
        state = "alive" if node.alive else "lost"
        typer.echo(f"{node.node_id}  {state:<6} {node.hardware_class}  {node.node_name}")
