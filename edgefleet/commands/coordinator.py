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
) -> None:
    """Serve the fleet API until SIGTERM or SIGINT, then stop gracefully."""
    from orchestrator.config import Address, CoordinatorConfig
    from orchestrator.server import running

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
