"""``edgefleet bench allocator``: allocator candidates side by side on one training job
(``edgefleet.allocators.bench``)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgefleet.allocators.candidates import CANDIDATES, candidates_named
from edgefleet.commands.options import known_models
from edgefleet.commands.output import fail, print_json
from edgefleet.progress import stderr_progress

_ALL = ",".join(candidate.name for candidate in CANDIDATES)
_MIB = 2**20


def bench_allocator(
    model: Annotated[str, typer.Option("--model", help="torchvision model name.")] = (
        "mobilenet_v2"
    ),
    image_size: Annotated[
        int, typer.Option("--image-size", help="Square image side, pixels.")
    ] = 224,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 16,
    steps: Annotated[
        int, typer.Option("--steps", help="Optimizer steps per run (the first is not timed).")
    ] = 8,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Runs per candidate and schedule, interleaved.")
    ] = 2,
    candidates: Annotated[
        str,
        typer.Option(
            "--candidates",
            help=f"Comma-separated; glibc-default is always run. Known: {_ALL}.",
        ),
    ] = _ALL,
    budget_fraction: Annotated[
        float,
        typer.Option(
            "--budget-fraction",
            help="The optimal schedule's budget, a fraction of store-all's activation peak.",
        ),
    ] = 0.33,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classifier outputs.")] = 1000,
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Limit of each child run, seconds.")
    ] = 1800.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Train one job under each allocator candidate, each in a fresh child, store-all and the
    optimal schedule, interleaved: memory above the baseline against live tensors, and step
    time as a ratio to glibc's default measured in the same run."""
    from edgefleet.allocators.bench import (
        AllocatorBenchConfig,
        AllocatorBenchError,
        run_allocator_bench,
    )

    known_models(model)
    try:
        config = AllocatorBenchConfig(
            model=model,
            image_size=image_size,
            batch_size=batch_size,
            steps=steps,
            repeats=repeats,
            candidates=candidates_named(candidates),
            budget_fraction=budget_fraction,
            num_classes=num_classes,
            timeout_s=timeout_s,
        )
    except ValueError as exc:
        fail(str(exc))
    try:
        with stderr_progress() as progress:
            result = run_allocator_bench(config, progress)
    except AllocatorBenchError as exc:
        fail(str(exc), code=1)
    if as_json:
        print_json(result.to_dict())
        return
    budget_mib = result.schedules.budget_bytes / _MIB
    store_all_mib = result.schedules.store_all_peak_bytes / _MIB
    typer.echo(
        f"{model} {image_size}px batch {batch_size}, {steps} steps x {repeats}: optimal schedule "
        f"at {budget_mib:.0f} MiB of store-all's {store_all_mib:.0f} MiB of activations"
    )
    typer.echo(
        f"{'candidate':<22}{'schedule':<10}{'above base':>11}{'live':>8}{'overhead':>10}"
        f"{'step s':>8}{'ratio':>7}  target"
    )
    for row in result.rows:
        if row.error is not None and row.survived_runs == 0:
            typer.echo(f"{row.candidate:<22}{row.schedule:<10}  failed: {row.error[:120]}")
            continue
        overhead = "-" if row.overhead_ratio is None else f"{row.overhead_ratio:+.0%}"
        step = "-" if row.median_step_s is None else f"{row.median_step_s:.2f}"
        ratio = "-" if row.step_ratio is None else f"{row.step_ratio:.2f}"
        typer.echo(
            f"{row.candidate:<22}{row.schedule:<10}"
            f"{(row.peak_above_baseline_bytes or 0) / _MIB:>9.0f}Mi"
            f"{(row.live_tensor_peak_bytes or 0) / _MIB:>6.0f}Mi{overhead:>10}{step:>8}"
            f"{ratio:>7}  {'meets' if row.meets_target else '-'}"
        )
