"""``edgefleet bench showcase``: the checkpointing engine on one model, side by side.

MobileNetV2 at 224×224, batch 8: store-all, PyTorch's ``checkpoint_sequential`` and the optimal
schedule at half and a third of store-all's activation peak, measured side by side; then a few
SGD steps under the optimal schedule beside plain autograd, from the same initial weights.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from edgefleet.commands.options import known_models
from edgefleet.commands.output import fail, print_json
from edgefleet.progress import stderr_progress

MODEL = "mobilenet_v2"
IMAGE_SIZE = 224
BATCH_SIZE = 8
BUDGETS = (0.5, 0.33)
TRAIN_STEPS = 3


def showcase(
    model: Annotated[str, typer.Option("--model", help="Model to train.")] = MODEL,
    image_size: Annotated[int, typer.Option("--image-size", help="Image side, pixels.")] = (
        IMAGE_SIZE
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = BATCH_SIZE,
    steps: Annotated[int, typer.Option("--steps", help="SGD steps side by side.")] = TRAIN_STEPS,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run the checkpointing showcase (MobileNetV2 at 224x224, batch 8, by default)."""
    from edgefleet.harness.benchmark import BenchConfig, run_benchmark
    from edgefleet.harness.showcase import train_side_by_side

    known_models(model)
    try:
        config = BenchConfig(
            model=model, image_size=image_size, batch_size=batch_size, budgets=BUDGETS, repeats=2
        )
        if steps < 1:
            raise ValueError(f"--steps must be at least 1, got {steps}")
    except ValueError as exc:
        fail(str(exc))
    with stderr_progress() as progress:
        result = run_benchmark(config, progress)
        progress("training side by side", 0, 1)
        training = train_side_by_side(model, image_size, batch_size, BUDGETS[-1], steps)
        progress("training side by side", 1, 1)
    if as_json:
        print_json({"benchmark": result.to_dict(), "training": asdict(training)})
        return
    typer.echo(
        f"\n{model} {image_size}x{image_size}, batch {batch_size}, {result.device}: "
        f"{result.num_stages} stages cut by torch.fx, profiled in {result.profile_s:.1f} s\n"
    )
    typer.echo(
        f"{'strategy':<36}{'budget':>10}{'predicted':>11}{'measured':>10}"
        f"{'step':>8}{'vs store-all':>14}{'gradients':>11}"
    )
    for row in result.rows:
        name = row.strategy + (f" ({row.segments} segments)" if row.segments else "")
        budget = f"{row.budget_bytes / 2**20:.0f} MiB" if row.budget_bytes else "-"
        match = "identical" if row.max_grad_rel_diff == 0 else f"{row.max_grad_rel_diff:.1e}"
        typer.echo(
            f"{name:<36}{budget:>10}{row.predicted_peak_bytes / 2**20:>7.0f} MiB"
            f"{row.measured_peak_bytes / 2**20:>6.0f} MiB{row.step_time_s:>7.2f}s"
            f"{row.time_ratio:>13.2f}x{match:>11}"
        )
    typer.echo(
        f"\n{training.steps} SGD steps with the optimal schedule under "
        f"{training.budget_bytes / 2**20:.0f} MiB (measured peak "
        f"{training.measured_peak_bytes / 2**20:.0f} MiB) beside plain autograd:\n"
        f"  losses {list(training.losses_optimal)} vs {list(training.losses_plain)}, "
        f"largest weight difference {training.max_weight_diff:.1e}"
    )
