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
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML file of CoordinatorConfig settings (EDGEFLEET_<SETTING> overrides it).",
        ),
    ] = None,
    enrollment_token: Annotated[
        str | None,
        typer.Option(
            "--enrollment-token", envvar="EDGEFLEET_ENROLLMENT_TOKEN", help="Boards present it."
        ),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option("--admin-token", envvar="EDGEFLEET_ADMIN_TOKEN", help="Operators present it."),
    ] = None,
    listen: Annotated[
        str | None, typer.Option("--listen", help="HOST:PORT (port 0: any; 127.0.0.1:50051).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Registry and model store (data/coordinator)."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="Database URL (default: SQLite in the data dir; EDGEFLEET_DB_URL)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Prometheus metrics port (0: any).")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key")] = None,
    client_ca: Annotated[Path | None, typer.Option("--client-ca", help="Mutual TLS.")] = None,
) -> None:
    """Serve the fleet API until SIGTERM or SIGINT, then stop gracefully.

    Every CoordinatorConfig setting can come from the --config file (its field name as the key)
    or the environment (EDGEFLEET_ and the name upper-cased: EDGEFLEET_CHUNK_BYTES); the flags
    here win over both. Secrets belong in the environment.
    """
    import os

    from orchestrator.config import Address
    from orchestrator.config_sources import load_config
    from orchestrator.server import running

    try:
        flags = {
            "enrollment_token": enrollment_token,
            "admin_token": admin_token,
            "listen": Address.parse(listen) if listen is not None else None,
            "data_dir": data_dir,
            "db_url": db,
            "metrics_port": metrics_port,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "client_ca": client_ca,
        }
        config = load_config(config_file, os.environ, flags)
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
        fail(f"cannot serve on {config.listen}: {exc}")
