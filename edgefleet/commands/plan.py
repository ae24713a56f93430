"""``edgefleet plan``: solve for checkpointing schedules (no torch needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from checkpointing.planning.budget import Optimizer
from edgefleet.commands.options import known_models, memory_budget_bytes
from edgefleet.commands.output import EXIT_INFEASIBLE, fail, print_json
from edgefleet.progress import stderr_progress

app = typer.Typer(help="Plan checkpointing schedules.", no_args_is_help=True)


@app.command("chain")
def plan_chain(
    file: Annotated[Path, typer.Argument(help="JSON chain: fw, bw, cw, cbw, ftmp, btmp.")],
    memory: Annotated[float, typer.Option("--memory", help="Budget, the input included.")],
    slots: Annotated[
        int | None, typer.Option("--slots", help="Memory slots of the DP (default: its own).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fastest schedule of a heterogeneous chain within a memory budget (persistent DP)."""
    # The solvers load numba (about 130 MB): every process that imports the CLI, a board's
    # agent included, would carry it.
    from checkpointing.planning.chain import Chain, ChainError
    from checkpointing.planning.solvers.persistent import DEFAULT_SLOTS, solve_persistent

    if slots is None:
        slots = DEFAULT_SLOTS
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
    from checkpointing.planning.solvers.revolve import revolve

    solution = revolve(steps, checkpoints, uf, ub)
    sequence = solution.schedule.to_strings()
    if as_json:
        print_json({"cost": solution.cost, "sequence": sequence})
        return
    typer.echo(f"cost {solution.cost:g}")
    typer.echo(" ".join(sequence))


@app.command("model")
def plan_model(
    model: Annotated[str, typer.Option("--model", help="Student model (torchvision name).")],
    image_size: Annotated[int, typer.Option("--image-size", help="Square image side, pixels.")],
    memory_budget: Annotated[
        str, typer.Option("--memory-budget", help="RAM the process may use, e.g. 1GiB.")
    ],
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Batch wanted (default: the largest).")
    ] = None,
    max_overhead: Annotated[
        float, typer.Option("--max-overhead", help="Step time per sample bound vs store-all.")
    ] = 1.5,
    optimizer: Annotated[
        Optimizer, typer.Option("--optimizer", help="Optimizer whose state to count.")
    ] = Optimizer.SGD,
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Teacher model held for inference.")
    ] = None,
    margin: Annotated[float, typer.Option("--margin", help="Fraction of budget kept free.")] = 0.05,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classifier outputs.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Batch size and schedule that fit a memory budget, from the model's memory model."""
    from checkpointing.planning.planner import PlanError, PlanRequest
    from checkpointing.planning.units import format_size
    from edgefleet import measurements

    budget_bytes = memory_budget_bytes(memory_budget)
    known_models(model, teacher)
    try:
        request = PlanRequest(
            image_size=image_size,
            budget_bytes=budget_bytes,
            optimizer=optimizer,
            batch_size=batch_size,
            max_overhead=max_overhead,
            margin=margin,
        )
    except ValueError as exc:
        fail(str(exc))
    with stderr_progress() as report:
        student_model = measurements.memory_model(model, num_classes, report)
        teacher_model = measurements.memory_model(teacher, num_classes, report) if teacher else None
        facts = measurements.process_facts(model, image_size, num_classes, report)
        try:
            plan = measurements.checked_plan(student_model, request, facts, report, teacher_model)
        except PlanError as exc:
            fail(str(exc), EXIT_INFEASIBLE)
    if as_json:
        print_json(plan.to_dict())
        return
    typer.echo(
        f"{model} at {image_size}px in {format_size(budget_bytes)}: batch {plan.batch_size}"
        f" x {plan.accumulation_steps} step(s), {plan.strategy}, predicted peak "
        f"{format_size(plan.predicted_peak_bytes)}, {plan.time_overhead:.2f}x store-all's time "
        f"per sample; store-all could use batch {plan.store_all_max_batch}"
    )
    for name, value in plan.terms.as_dict().items():
        typer.echo(f"  {name:<20}{format_size(value):>12}")
    for note in plan.notes:
        typer.echo(f"note: {note}")
