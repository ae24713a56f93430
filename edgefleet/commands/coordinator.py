"""``edgefleet coordinator``: run the coordinator (no torch in this process)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.commands.output import fail
from edgefleet.commands.service import start_service

app = typer.Typer(help="Run the fleet coordinator.", no_args_is_help=True)


@app.command("serve")
def serve(
    enrollment_token: Annotated[
        str,
        typer.Option(
            "--enrollment-token", envvar="EDGEFLEET_ENROLLMENT_TOKEN", help="Boards present it."
        ),
    ],
    admin_token: Annotated[
        str,
        typer.Option("--admin-token", envvar="EDGEFLEET_ADMIN_TOKEN", help="Operators present it."),
    ],
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT (port 0: any).")] = (
        "127.0.0.1:50051"
    ),
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Registry and model store.")] = (
        Path("data/coordinator")
    ),
    db: Annotated[
        str | None, typer.Option("--db", help="Database URL (default: SQLite in --data-dir).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Prometheus metrics port (0: any).")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key")] = None,
    client_ca: Annotated[Path | None, typer.Option("--client-ca", help="Mutual TLS.")] = None,
    chunk_bytes: Annotated[
        int | None, typer.Option("--chunk-bytes", help="Largest chunk sent, bytes.")
    ] = None,
    heartbeat_timeout_s: Annotated[
        float | None, typer.Option("--heartbeat-timeout-s", help="Silent this long: lost.")
    ] = None,
    idle_pull_interval_s: Annotated[
        float | None, typer.Option("--idle-pull-interval-s", help="Idle boards pull this often.")
    ] = None,
    profile_timeout_s: Annotated[
        float | None, typer.Option("--profile-timeout-s", help="Then another board profiles.")
    ] = None,
    ram_fraction: Annotated[
        float | None, typer.Option("--ram-fraction", help="Of RAM, for boards stating no budget.")
    ] = None,
    default_overhead_fraction: Annotated[
        float | None,
        typer.Option("--default-overhead-fraction", help="Allocator term a board measured none."),
    ] = None,
    tick_s: Annotated[
        float | None, typer.Option("--tick-s", help="How often the conductor looks.")
    ] = None,
    fsync: Annotated[
        bool | None, typer.Option("--fsync/--no-fsync", help="Flush weights before answering.")
    ] = None,
    handler_threads: Annotated[
        int | None,
        typer.Option("--handler-threads", help="gRPC handler threads (uploads leave 16 free)."),
    ] = None,
    upload_concurrency: Annotated[
        int | None,
        typer.Option("--upload-concurrency", help="Uploads received at once; the rest wait."),
    ] = None,
    http2_bdp_probe: Annotated[
        bool | None,
        typer.Option("--http2-bdp-probe/--no-http2-bdp-probe", help="For boards on long links."),
    ] = None,
) -> None:
    """Serve the fleet API until SIGTERM or SIGINT, then stop gracefully."""
    from orchestrator.config import Address, CoordinatorConfig
    from orchestrator.server import running

    # Options left out keep CoordinatorConfig's own defaults, which live there only.
    tuning = {
        name: value
        for name, value in (
            ("chunk_bytes", chunk_bytes),
            ("heartbeat_timeout_s", heartbeat_timeout_s),
            ("idle_pull_interval_s", idle_pull_interval_s),
            ("profile_timeout_s", profile_timeout_s),
            ("ram_fraction", ram_fraction),
            ("default_overhead_fraction", default_overhead_fraction),
            ("tick_s", tick_s),
            ("fsync", fsync),
            ("handler_threads", handler_threads),
            ("upload_concurrency", upload_concurrency),
            ("http2_bdp_probe", http2_bdp_probe),
        )
        if value is not None
    }
    try:
        config = CoordinatorConfig(
            data_dir=data_dir,
            enrollment_token=enrollment_token,
            admin_token=admin_token,
            listen=Address.parse(listen),
            db_url=db,
            metrics_port=metrics_port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            client_ca=client_ca,
            **tuning,  # type: ignore[arg-type]
        )
    except ValueError as exc:
        fail(str(exc))
    stop = start_service()
    try:
        with running(config) as server:
            typer.echo(f"coordinator listening on {config.listen.host}:{server.port}", err=True)
            if server.metrics_port is not None:
                typer.echo(f"metrics on {config.listen.host}:{server.metrics_port}", err=True)
            stop.wait()
    except RuntimeError as exc:
        # grpc raises RuntimeError when the address cannot be bound.
        fail(f"cannot serve on {listen}: {exc}")
