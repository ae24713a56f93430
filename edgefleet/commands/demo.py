"""``edgefleet demo``: the fleet demo, a coordinator and four memory-capped boards on this machine.

The engine's own showcase (one model, schedules side by side) is ``edgefleet bench showcase``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.commands.output import fail, print_json

DATA_DIR = Path("demo-data")


def demo(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Caches (models, frames) and the run's files.")
    ] = DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run the fleet demo: four capped boards learn their own viewpoints from a teacher."""
    from edgefleet.demo.report import plot, table
    from edgefleet.demo.run import DemoConfig, DemoError, run_demo

    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    try:
        config = DemoConfig(data_dir=data_dir)
        result, teacher_by_board = run_demo(config, say)
    except (DemoError, ValueError, OSError) as exc:
        fail(str(exc))
    plot_path = data_dir / "accuracy_per_round.png"
    plot(result, teacher_by_board, plot_path)
    figures = result.to_dict()
    (data_dir / "demo_result.json").write_text(json.dumps(figures, indent=2) + "\n")
    if as_json:
        print_json(figures)
        return
    typer.echo("")
    typer.echo(table(result))
    typer.echo(f"\naccuracy per round per board: {plot_path}")
