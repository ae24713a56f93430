"""``edgefleet bench board``: the agent's runtime on an emulated arm64 board (Pi 3 or Pi 4), or
with ``--scenario``, a plan proved under a real cap there (``edgefleet.board.scenario``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.commands.output import fail, print_json

_ARCHES = ("arm64",)
_ALLOCATORS = ("agent", "glibc-default")
_BASELINE_TIMEOUT_S = 900.0
_SCENARIO_TIMEOUT_S = 5400.0
"""A planned MobileNetV2 224x224 step at batch 15-40 takes tens of minutes emulated."""


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
        float | None,
        typer.Option(
            "--timeout",
            help="Limit of each emulated run, seconds (default 900; 5400 with --scenario).",
        ),
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            help="pi3-mobilenet: plan MobileNetV2's batch for a Raspberry Pi 3 and prove it "
            "under a real cap on the emulated board (measurements cached; hours cold).",
        ),
    ] = None,
    allocator: Annotated[
        str,
        typer.Option(
            "--allocator",
            help="With --scenario, the training process's allocator: agent (the agent's "
            "mallopt fix and warm-up, as it trains) or glibc-default (glibc as it starts, no "
            "warm-up).",
        ),
    ] = "agent",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Import the agent, warm its runtime up and measure it on an emulated board (qemu-user):
    the guest's own memory, and qemu's view beside it. Takes minutes. With --scenario, run that
    benchmark on the board instead."""
    from checkpointing.planning.units import format_size
    from edgefleet.board.baseline import measure_board_baseline
    from edgefleet.board.emulator import Board, BoardError, Emulation, default_board_dir

    if arch not in _ARCHES:
        fail(f"--arch must be one of {', '.join(_ARCHES)}, got {arch!r}")
    if allocator not in _ALLOCATORS:
        fail(f"--allocator must be one of {', '.join(_ALLOCATORS)}, got {allocator!r}")
    if scenario is not None:
        _bench_scenario(scenario, cpu, board_dir, threads, timeout_s, allocator, as_json)
        return
    if allocator != "agent":
        # The runtime probe is the agent's own start-up, fix included: nothing to choose.
        fail("--allocator applies to --scenario only")
    try:
        emulation = Emulation(
            cpu=cpu,
            threads=threads,
            timeout_s=_BASELINE_TIMEOUT_S if timeout_s is None else timeout_s,
        )
        board = Board(board_dir if board_dir is not None else default_board_dir())
    except (ValueError, BoardError) as exc:
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


def _bench_scenario(
    name: str,
    cpu: str,
    board_dir: Path | None,
    threads: int,
    timeout_s: float | None,
    allocator_name: str,
    as_json: bool,
) -> None:
    from checkpointing.planning.planner import PlanError
    from checkpointing.planning.units import format_size
    from edgefleet.board.emulator import (
        Board,
        BoardError,
        Emulation,
        default_board_dir,
        qemu_binary,
        qemu_version,
    )
    from edgefleet.board.guest_training import Allocator
    from edgefleet.board.scenario import run_scenario, scenario_named
    from edgefleet.progress import stderr_progress
    from node_agent.board_classes import board_class

    try:
        scenario = scenario_named(name)
        if cpu != scenario.cpu:
            raise ValueError(f"--scenario {name} runs on the {scenario.cpu}, not --cpu {cpu}")
        emulation = Emulation(
            cpu=scenario.cpu,
            threads=threads,
            timeout_s=_SCENARIO_TIMEOUT_S if timeout_s is None else timeout_s,
        )
        board = Board(board_dir if board_dir is not None else default_board_dir())
        version = qemu_version(qemu_binary())
    except (ValueError, BoardError) as exc:
        fail(str(exc))
    # Read now, not fixed: the class's OS reserve is a measurement that may be revised.
    cap_bytes = board_class(scenario.board_class).default_budget_bytes
    try:
        with stderr_progress() as report:
            result = run_scenario(
                board, emulation, scenario, cap_bytes, version, report, Allocator(allocator_name)
            )
    except (BoardError, PlanError) as exc:
        fail(str(exc), code=1)
    payload = result.to_dict()
    if as_json:
        print_json(payload)
        return
    plan, store_all = payload["plan"], payload["store_all_at_planned_batch"]
    typer.echo(
        f"{name}: {scenario.model} {scenario.image_size}px on an emulated {scenario.cpu}, "
        f"torch {payload['torch_version']}, allocator {payload['allocator']}"
    )
    typer.echo(
        f"  cap {format_size(payload['cap_bytes'])} ({scenario.board_class}) + emulator "
        f"{format_size(payload['emulator_allowance_bytes'])} = cgroup limit "
        f"{format_size(payload['cgroup_limit_bytes'])}"
    )
    typer.echo(
        f"  store-all's largest batch {payload['store_all_max_batch']}, planned batch "
        f"{payload['planned_batch']}"
    )
    peak = plan["peak_rss_bytes"]
    typer.echo(
        f"  plan: {'survived' if plan['survived'] else plan['failure']}, guest peak "
        f"{'-' if peak is None else format_size(peak)}, predicted "
        f"{format_size(plan['predicted_peak_bytes'])}"
    )
    typer.echo(
        "  store-all at the planned batch: "
        f"{'survived' if store_all['survived'] else store_all['failure']}"
    )
    for target, met in payload["targets"].items():
        typer.echo(f"  {target}: {'met' if met else 'MISSED'}")
