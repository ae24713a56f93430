"""``edgefleet bench board``: the agent's runtime on an emulated arm64 board (Pi 3 or Pi 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.commands.output import fail, print_json

_ARCHES = ("arm64",)


def bench_board(
    arch: Annotated[str, typer.Option("--arch", help="The board's architecture: arm64.")] = "arm64",
    cpu: Annotated[
        str,
        typer.Option("--cpu", help="cortex-a53 (Raspberry Pi 3) or cortex-a72 (Raspberry Pi 4)."),
    ] = "cortex-a53",
    board_dir: Annotated[
        Path | None,
        typer.Option(
            "--board-dir",
            help="What scripts/arm64_board.sh built (default: $EDGEFLEET_ARM64_DIR or "
            "~/.cache/edgefleet/arm64).",
        ),
    ] = None,
    threads: Annotated[
        int, typer.Option("--threads", help="torch threads in the guest (a Pi has 4 cores).")
    ] = 4,
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Limit of the emulated run, seconds.")
    ] = 900.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Import the agent, warm its runtime up and measure it on an emulated board (qemu-user):
    the guest's own memory, and qemu's view beside it. Takes minutes."""
    from checkpointing.units import format_size
    from edgefleet.board.baseline import measure_board_baseline
    from edgefleet.board.emulator import Board, BoardError, Emulation, default_board_dir

    if arch not in _ARCHES:
        fail(f"--arch must be one of {', '.join(_ARCHES)}, got {arch!r}")
    try:
        emulation = Emulation(cpu=cpu, threads=threads, timeout_s=timeout_s)
        board = Board(board_dir if board_dir is not None else default_board_dir())
    except ValueError as exc:
        fail(str(exc))
    except BoardError as exc:
        fail(str(exc))
    try:
        result = measure_board_baseline(board, emulation)
    except BoardError as exc:
        fail(str(exc), code=1)
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(
        f"{result.arch} {result.cpu}, torch {result.torch_version}, {result.threads} threads: "
        f"import {result.import_s:.1f} s, warm-up {result.warm_up_s:.1f} s (emulated)"
    )
    typer.echo(
        f"  guest:  baseline {format_size(result.runtime_baseline_bytes)} = anonymous "
        f"{format_size(result.rss_anon_bytes)} + file allowance "
        f"{format_size(result.file_allowance_bytes)} (of {format_size(result.rss_file_bytes)} "
        "file-backed)"
    )
    typer.echo(
        f"  qemu:   baseline {format_size(result.qemu.runtime_baseline_bytes)}, RSS "
        f"{format_size(result.qemu.rss_bytes)} (anonymous "
        f"{format_size(result.qemu.rss_anon_bytes)}, file "
        f"{format_size(result.qemu.rss_file_bytes)}), the emulator included"
    )
