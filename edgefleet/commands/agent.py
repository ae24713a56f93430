"""``edgefleet agent``: run the agent of one board (torch is imported here, never elsewhere)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgefleet.commands.options import memory_budget_bytes
from edgefleet.commands.output import fail, print_json
from edgefleet.commands.service import start_service

if TYPE_CHECKING:
    from node_agent.platform_support import Platform

app = typer.Typer(help="Run a board's agent.", no_args_is_help=True)


@app.command("run")
def run(
    coordinator: Annotated[str, typer.Option("--coordinator", help="HOST:PORT to dial.")],
    enrollment_token: Annotated[
        str,
        typer.Option(
            "--enrollment-token", envvar="EDGEFLEET_ENROLLMENT_TOKEN", help="The fleet's token."
        ),
    ],
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Identity, unsent updates, frames, weights.")
    ],
    memory_budget: Annotated[
        str | None, typer.Option("--memory-budget", help="RAM the agent may use, e.g. 1GiB.")
    ] = None,
    frames: Annotated[
        Path | None, typer.Option("--frames", help="The board's frames (default DATA/frames).")
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="Local model weights (default DATA/weights)."),
    ] = None,
    hardware_class: Annotated[
        str, typer.Option("--hardware-class", help="Name the board's kind (default: derived).")
    ] = "",
    name: Annotated[str, typer.Option("--name", help="The board's name in listings.")] = "",
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="CA of the coordinator's certificate.")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Mutual TLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Mutual TLS.")] = None,
    memory_margin: Annotated[
        float, typer.Option("--memory-margin", help="Stop a task this close to the budget.")
    ] = 0.03,
    threads: Annotated[
        int, typer.Option("--threads", help="torch threads (default: the cores it may use).")
    ] = 0,
) -> None:
    """Register this board, then profile and train as the coordinator asks, until SIGTERM."""
    from node_agent.client import TlsFiles
    from node_agent.config import AgentConfig

    if (tls_cert or tls_key) and tls_ca is None:
        fail("--tls-cert and --tls-key need --tls-ca")
    try:
        config = AgentConfig(
            coordinator=coordinator,
            enrollment_token=enrollment_token,
            data_dir=data_dir,
            memory_budget_bytes=memory_budget_bytes(memory_budget) if memory_budget else 0,
            frames_dir=frames,
            weights_dir=weights,
            hardware_class=hardware_class,
            name=name,
            tls=TlsFiles(tls_ca, tls_cert, tls_key) if tls_ca else None,
            memory_margin=memory_margin,
            threads=threads,
        )
    except ValueError as exc:
        fail(str(exc))
    _check_platform()
    stop = start_service()
    # Imported once logging is set up: importing torch takes a while and the agent logs early.
    from node_agent.agent import Agent, EnrollmentRefused

    try:
        Agent.start(config, stop).run()
    except EnrollmentRefused as exc:
        fail(f"the coordinator at {coordinator} refused the enrollment token: {exc}")
    except ValueError as exc:
        fail(str(exc))


@app.command("baseline")
def baseline(
    threads: Annotated[
        int, typer.Option("--threads", help="torch threads, as the agent will run.")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure what a fresh agent process holds once its runtime is warm, before any frame or
    model: a board's memory budget must leave room for training above it."""
    if threads < 0:
        fail(f"--threads must not be negative, got {threads}")
    _check_platform()
    import node_agent.agent  # noqa: F401 - what the agent's process loads is its baseline
    from checkpointing.execution.process_memory import rss_bytes
    from checkpointing.planning.units import format_size
    from node_agent.runtime import measure_runtime

    measured = measure_runtime(threads)
    planned_on = rss_bytes()
    figures = {
        # What the agent plans and guards with today: the whole RSS.
        "runtime_baseline_bytes": planned_on,
        # The steadier accounting, measured beside it: private memory + the file pages used.
        "private_plus_allowance_bytes": measured.runtime_baseline_bytes,
        "rss_anon_bytes": measured.rss_anon_bytes,
        "rss_shmem_bytes": measured.rss_shmem_bytes,
        "rss_file_bytes": measured.rss_file_bytes,
        "file_allowance_bytes": measured.file_allowance_bytes,
        "allocator_fixed": measured.allocator_fixed,
        "allocator": measured.allocator,
    }
    if as_json:
        print_json(figures)
        return
    typer.echo(
        f"runtime baseline: {format_size(planned_on)} ({planned_on} bytes, RSS); "
        f"{format_size(measured.rss_anon_bytes + measured.rss_shmem_bytes)} private + "
        f"{format_size(measured.file_allowance_bytes)} of "
        f"{format_size(measured.rss_file_bytes)} mapped file pages used"
    )


@app.command("check")
def check(
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="How long torch may take to run once.")
    ] = 600.0,
) -> None:
    """Check that this board can run the agent: its architecture, the installed torch, and torch
    actually running a threaded matrix product and a backward pass in a child process."""
    import sys

    from node_agent.platform_support import UnsupportedPlatform, probe_torch

    board = _check_platform()
    try:
        version = probe_torch(sys.executable, timeout_s)
    except UnsupportedPlatform as exc:
        fail(str(exc))
    except subprocess.TimeoutExpired:
        fail(f"torch did not finish a small matrix product within {timeout_s:g} s")
    lse = f", LSE atomics: {'yes' if board.has_lse_atomics else 'no'}"
    typer.echo(
        f"ok: {board.arch}{lse if board.arch == 'aarch64' else ''}, torch {version} runs here"
    )


def _check_platform() -> Platform:
    """The board, if it can run the agent as installed; else exit 2 saying what would."""
    from node_agent.platform_support import UnsupportedPlatform, check_this_board

    try:
        return check_this_board()
    except UnsupportedPlatform as exc:
        fail(str(exc))


@app.command("build-arena")
def build_arena_command(
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Where to write it (default: the cache, per version)."),
    ] = None,
) -> None:
    """Compile the plan-aware arena for this board and print its path, for LD_PRELOAD (the
    agent's image and systemd unit preload it; docs/agent.md)."""
    from node_agent.arena import ArenaBuildError, build_arena

    try:
        library = build_arena(output)
    except ArenaBuildError as exc:
        fail(str(exc))
    typer.echo(str(library))
