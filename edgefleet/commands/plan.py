"""``edgefleet plan``: solve for checkpointing schedules (no torch needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from checkpointing.chain import Chain, ChainError
from checkpointing.solvers.persistent import DEFAULT_SLOTS, solve_persistent
from checkpointing.solvers.revolve import revolve
from edgefleet.commands.output import EXIT_INFEASIBLE, fail, print_json

app = typer.Typer(help="Plan checkpointing schedules.", no_args_is_help=True)


@app.command("chain")
def plan_chain(
    file: Annotated[Path, typer.Argument(help="JSON chain: fw, bw, cw, cbw, ftmp, btmp.")],
    memory: Annotated[float, typer.Option("--memory", help="Budget, the input included.")],
    slots: Annotated[int, typer.Option("--slots", help="Memory slots of the DP.")] = DEFAULT_SLOTS,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fastest schedule of a heterogeneous chain within a memory budget (persistent DP)."""
    try:
        chain = Chain.from_json_file(file)
    except ChainError as exc:
        fail(f"{file}: {exc}")
    if not math.isfinite(memory) or memory <= 0:
        fail(f"--memory must be a positive number, got {memory}")
    if slots < 1:
        fail(f"--slots must be at least 1, got {slots}")
    solution = solve_persistent(chain, memory, slots)
    if not solution.feasible or solution.schedule is None:
        message = (
            f"no schedule fits in memory {memory:g}; "
            f"the smallest feasible budget is {solution.min_budget:g}"
        )
        if memory >= solution.min_budget:
            message += (
                f" (sizes rounded up to {slots} slots of {solution.slot_size:g} do not fit;"
                " give more --slots or a little more memory)"
            )
        fail(message, EXIT_INFEASIBLE)
    sequence = solution.schedule.to_strings()
    if as_json:
        print_json(
            {
                "feasible": True,
                "makespan": solution.makespan,
                "peak": solution.peak,
                "budget": memory,
                "min_budget": solution.min_budget,
                "slots": solution.slots,
                "sequence": sequence,
                "solve_s": solution.solve_s,
            }
        )
        return
    typer.echo(f"makespan {solution.makespan:g}, peak {solution.peak:g} of {memory:g}")
    typer.echo(f"solved in {solution.solve_s * 1e3:.1f} ms with {solution.slots} slots")
    typer.echo(" ".join(sequence))


@app.command("revolve")
def plan_revolve(
    steps: Annotated[int, typer.Option("--steps", help="Stages before the loss.", min=0)],
    checkpoints: Annotated[
        int, typer.Option("--checkpoints", help="Checkpoints, the input's included.", min=1)
    ],
    uf: Annotated[float, typer.Option("--uf", help="Cost of a forward step.", min=0)] = 1.0,
    ub: Annotated[float, typer.Option("--ub", help="Cost of a backward step.", min=0)] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Revolve's optimal schedule for a chain of identical stages (the seed DP)."""
    solution = revolve(steps, checkpoints, uf, ub)
    sequence = solution.schedule.to_strings()
    if as_json:
        print_json({"cost": solution.cost, "sequence": sequence})
        return
    typer.echo(f"cost {solution.cost:g}")
    typer.echo(" ".join(sequence))
