"""``edgefleet jobs``: the operators' client for the coordinator's jobs API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

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
TlsCa = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca", envvar="EDGEFLEET_TLS_CA", help="CA of the coordinator's certificate."
    ),
]
TlsCert = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert", envvar="EDGEFLEET_TLS_CERT", help="Client certificate (mutual TLS)."
    ),
]
TlsKey = Annotated[
    Path | None,
    typer.Option("--tls-key", envvar="EDGEFLEET_TLS_KEY", help="Client key (mutual TLS)."),
]
_TIMEOUT_S = 30.0


def _tls(ca: Path | None, cert: Path | None, key: Path | None) -> Any:
    from node_agent.client import TlsFiles

    if (cert is None) != (key is None):
        fail("--tls-cert and --tls-key go together")
    if cert is not None and ca is None:
        fail("--tls-cert and --tls-key need --tls-ca")
    for option, path in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)):
        if path is not None and not path.is_file():
            fail(f"{option}: no such file {path}")
    return TlsFiles(ca, cert, key) if ca is not None else None


@contextmanager
def _client(coordinator: str, admin_token: str, tls: Any) -> Iterator[Any]:
    from edgefleet.jobs_client import JobsClient
    from node_agent.client import open_channel

    with open_channel(coordinator, tls) as channel:
        yield JobsClient(channel, admin_token, _TIMEOUT_S)


@contextmanager
def _connected(
    coordinator: str,
    admin_token: str,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> Iterator[Any]:
    """A jobs client on a channel to ``coordinator``, its call failures as clear messages."""
    with (
        _rpc_errors(coordinator),
        _client(coordinator, admin_token, _tls(tls_ca, tls_cert, tls_key)) as client,
    ):
        yield client


@contextmanager
def _rpc_errors(coordinator: str) -> Iterator[None]:
    """A failed call (or stream) as a clear message and exit status, never a traceback."""
    import grpc

    try:
        yield
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
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: AsJson = False,
) -> None:
    """Submit the job in FILE, uploading the initial weights file it names first."""
    import dataclasses

    from orchestrator.job_spec import JobSpecError, load_job_file
    from orchestrator.servicers.jobs import spec_to_proto

    try:
        spec, weights = load_job_file(file)
    except JobSpecError as exc:
        fail(f"{file}: {exc}")
    with _connected(coordinator, admin_token, tls_ca, tls_cert, tls_key) as client:
        if weights is not None:
            spec = dataclasses.replace(
                spec, initial_weights_sha256_hex=client.upload_weights(_read(weights))
            )
        job = client.submit(spec_to_proto(spec))
    _show(job, as_json)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    raise AssertionError("unreachable: fail exits")


@app.command("get")
def get(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    coordinator: Coordinator,
    admin_token: AdminToken,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: AsJson = False,
) -> None:
    """Show one job."""
    with _connected(coordinator, admin_token, tls_ca, tls_cert, tls_key) as client:
        job = client.get(job_id)
    _show(job, as_json)


@app.command("list")
def list_jobs(
    coordinator: Coordinator,
    admin_token: AdminToken,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: AsJson = False,
) -> None:
    """List every job, newest first."""
    with _connected(coordinator, admin_token, tls_ca, tls_cert, tls_key) as client:
        found = client.list_jobs()
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
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: AsJson = False,
) -> None:
    """Cancel a job that has not finished."""
    with _connected(coordinator, admin_token, tls_ca, tls_cert, tls_key) as client:
        job = client.cancel(job_id)
    _show(job, as_json)


@app.command("watch")
def watch(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    coordinator: Coordinator,
    admin_token: AdminToken,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: AsJson = False,
) -> None:
    """Follow a job's events until it ends; exit 0 if it succeeded, 1 otherwise.

    A lost connection is retried from the last event seen, so nothing is missed or repeated.
    """
    from edgefleet.job_events import describe
    from protos.edgefleet.v1 import jobs_pb2

    final = jobs_pb2.JOB_STATE_UNSPECIFIED
    with _connected(coordinator, admin_token, tls_ca, tls_cert, tls_key) as client:
        for event in client.follow(job_id):
            if event.HasField("state_changed"):
                final = event.state_changed.state
            if as_json:
                print_json(_message_dict(event))
            else:
                typer.echo(f"{event.sequence:>5}  {describe(event)}")
    if final != jobs_pb2.JOB_STATE_SUCCEEDED:
        raise typer.Exit(1)


@app.command("download")
def download(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the safetensors file.")],
    coordinator: Coordinator,
    admin_token: AdminToken,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    version: Annotated[
        int | None, typer.Option("--version", help="Model version (default: the latest).")
    ] = None,
) -> None:
    """Download a job's model (its final model once it succeeded), checked against its digest."""
    from protos.transfer import TransferError

    with _connected(coordinator, admin_token, tls_ca, tls_cert, tls_key) as client:
        try:
            data = client.download_model(job_id, version)
        except TransferError as exc:
            fail(f"the download did not check out: {exc}")
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(data)
    partial.replace(out)
    typer.echo(f"wrote {out} ({len(data)} bytes)")


nodes_app = typer.Typer(help="The boards the coordinator knows.", no_args_is_help=True)


@nodes_app.command("list")
def list_nodes(
    coordinator: Coordinator,
    admin_token: AdminToken,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    hardware_class: Annotated[str, typer.Option("--hardware-class", help="Only this class.")] = "",
    as_json: AsJson = False,
) -> None:
    """List nodes with their hardware, liveness and memory models."""
    with _connected(coordinator, admin_token, tls_ca, tls_cert, tls_key) as client:
        nodes = client.list_nodes(hardware_class)
    if as_json:
        print_json([_message_dict(node) for node in nodes])
        return
    for node in nodes:
        state = "alive" if node.alive else "lost"
        plans = ", ".join(
            f"batch {p.plan.batch_size} {p.plan.strategy}" if p.fits else "does not fit"
            for p in node.plans
        )
        typer.echo(
            f"{node.node_id}  {state:<6} {node.hardware_class}  {node.node_name}"
            + (f"  [{plans}]" if plans else "")
        )
