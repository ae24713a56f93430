"""``edgefleet bench``: measured benchmarks; results go to docs/benchmarks.md with their command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.commands.allocator import bench_allocator
from edgefleet.commands.board import bench_board
from edgefleet.commands.options import known_models, memory_budget_bytes
from edgefleet.commands.output import fail, print_json
from edgefleet.progress import stderr_progress

app = typer.Typer(help="Run benchmarks.", no_args_is_help=True)
app.command("board")(bench_board)
app.command("allocator")(bench_allocator)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        fail(f"--budgets must be comma-separated fractions like 0.5,0.33, got {text!r}")
    if not values or any(not 0 < v <= 1 for v in values):
        fail(f"--budgets must be fractions in (0, 1], got {text!r}")
    return values


@app.command("checkpointing")
def bench_checkpointing(
    model: Annotated[str, typer.Option("--model", help="torchvision model name, or small_cnn.")],
    image_size: Annotated[int, typer.Option("--image-size", help="Square image side, pixels.")],
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")],
    budgets: Annotated[
        str, typer.Option("--budgets", help="Fractions of store-all's activation peak.")
    ] = "0.5,0.33,0.25",
    repeats: Annotated[int, typer.Option("--repeats", help="Timed steps per strategy.")] = 5,
    slots: Annotated[int, typer.Option("--slots", help="Memory slots of the DP.")] = 500,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG of step time against peak.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Profile a model, then run store-all, checkpoint_sequential and the optimal schedule."""
    fractions = _fractions(budgets)
    # Imported here: torch is only needed by this command, not by the CLI as a whole.
    from edgefleet.harness.benchmark import BenchConfig, run_benchmark

    known_models(model)
    try:
        config = BenchConfig(
            model=model,
            image_size=image_size,
            batch_size=batch_size,
            budgets=fractions,
            repeats=repeats,
            slots=slots,
            device=device,
        )
    except ValueError as exc:
        fail(str(exc))
    with stderr_progress() as progress:
        result = run_benchmark(config, progress)
    if plot is not None:
        from edgefleet.plots import plot_checkpointing

        plot_checkpointing(result, plot)
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(
        f"{result.model} {result.image_size}px batch {result.batch_size} on {result.device}: "
        f"{result.num_stages} stages, profiled in {result.profile_s:.1f} s"
    )
    header = f"{'strategy':<22}{'budget MB':>10}{'pred MB':>9}{'meas MB':>9}"
    typer.echo(header + f"{'step s':>9}{'ratio':>7}{'grad diff':>11}")
    for row in result.rows:
        name = row.strategy + (f"({row.segments})" if row.segments else "")
        budget = f"{row.budget_bytes / 2**20:.0f}" if row.budget_bytes else "-"
        typer.echo(
            f"{name:<22}{budget:>10}{row.predicted_peak_bytes / 2**20:>9.1f}"
            f"{row.measured_peak_bytes / 2**20:>9.1f}{row.step_time_s:>9.3f}"
            f"{row.time_ratio:>7.2f}{row.max_grad_rel_diff:>11.1e}"
        )
    for fraction in result.infeasible_budgets:
        typer.echo(
            f"budget {fraction} of store-all: no schedule fits; the least that does is "
            f"{result.min_budget_bytes / 2**20:.1f} MiB"
        )


@app.command("solver")
def bench_solver(
    stages: Annotated[int, typer.Option("--stages", help="Stages per chain.", min=1)] = 100,
    slots: Annotated[int, typer.Option("--slots", help="Memory slots of the DP.", min=1)] = 500,
    chains: Annotated[int, typer.Option("--chains", help="Random chains to solve.", min=1)] = 5,
    fraction: Annotated[
        float, typer.Option("--fraction", help="Budget as a fraction of store-all's peak.")
    ] = 0.4,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    numpy_twin: Annotated[
        bool, typer.Option("--numpy", help="Time the plain numpy twin instead of the kernel.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time the persistent DP on random heterogeneous chains (solver time only)."""
    import random
    import statistics

    from checkpointing.planning.chain import Chain
    from checkpointing.planning.simulate import simulate
    from checkpointing.planning.solvers.baselines import store_all
    from checkpointing.planning.solvers.persistent import solve_persistent

    if not 0 < fraction <= 1:
        fail(f"--fraction must be in (0, 1], got {fraction}")
    rng = random.Random(seed)
    times_s: list[float] = []
    for _ in range(chains):
        chain = Chain(
            fw=tuple(rng.uniform(1e-3, 2e-2) for _ in range(stages)),
            bw=tuple(rng.uniform(2e-3, 4e-2) for _ in range(stages + 1)),
            cw=tuple(rng.uniform(1e5, 3e7) for _ in range(stages + 1)),
            cbw=tuple(rng.uniform(1e5, 6e7) for _ in range(stages + 1)),
            ftmp=tuple(rng.uniform(0, 1e7) for _ in range(stages)),
            btmp=tuple(rng.uniform(0, 3e7) for _ in range(stages + 1)),
        )
        budget = fraction * simulate(chain, store_all(stages)).peak
        solution = solve_persistent(chain, budget, slots, compiled=not numpy_twin)
        times_s.append(solution.solve_s)
    payload = {
        "implementation": "numpy" if numpy_twin else "numba",
        "stages": stages,
        "slots": slots,
        "chains": chains,
        "median_solve_s": statistics.median(times_s),
        "max_solve_s": max(times_s),
    }
    if as_json:
        print_json(payload)
        return
    typer.echo(
        f"{chains} chains of {stages} stages, {slots} slots: median solve "
        f"{payload['median_solve_s']:.3f} s, max {payload['max_solve_s']:.3f} s"
    )


def _sizes(option: str, text: str, least: int) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        fail(f"{option} must be comma-separated integers like 1,2,4, got {text!r}")
    if not values or any(v < least for v in values):
        fail(f"{option} must be integers of at least {least}, got {text!r}")
    if len(set(values)) != len(values):
        fail(f"{option} lists a size twice: {text!r}")
    return values


@app.command("memory-model")
def bench_memory_model(
    model: Annotated[str, typer.Option("--model", help="torchvision model name, or small_cnn.")],
    image_sizes: Annotated[
        str, typer.Option("--image-sizes", help="Square image sides to fit and check, pixels.")
    ] = "64,128,224",
    batch_sizes: Annotated[
        str, typer.Option("--batch-sizes", help="Batch sizes the model is fitted on.")
    ] = "1,2,4",
    held_out: Annotated[
        str,
        typer.Option(
            "--held-out", help="Batch sizes measured against the prediction (unseen in the fit)."
        ),
    ] = "8,16",
    repeats: Annotated[int, typer.Option("--repeats", help="Timed steps per case.", min=1)] = 2,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="CPU threads for torch (default: torch's choice).", min=1),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG of predicted against measured.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fit per-stage memory and time models on small batches, then check them on larger ones."""
    sides = _sizes("--image-sizes", image_sizes, 8)
    fitted = _sizes("--batch-sizes", batch_sizes, 1)
    checked = _sizes("--held-out", held_out, 1)
    if len(sides) < 2 or len(fitted) < 2:
        fail("the fit needs at least 2 image sizes and 2 batch sizes")
    both = sorted(set(checked) & set(fitted))
    if both:
        fail(f"--held-out sizes must not be fitted on; both options list {both}")
    if max(checked) < 4 * max(fitted):
        fail(
            f"--held-out needs a batch size at least 4x the largest fitted ({4 * max(fitted)}), "
            f"got {held_out!r}"
        )
    # Imported here: torch is only needed by this command, not by the CLI as a whole.
    import time

    import torch

    from checkpointing.execution.profile_sizes import fit_model
    from edgefleet.harness.sampling import check_memory_model, summarise

    known_models(model)
    if threads is not None:
        torch.set_num_threads(threads)
    with stderr_progress() as progress:
        started = time.perf_counter()
        memory_model = fit_model(model, fitted, sides, device=device, progress=progress)
        fit_s = time.perf_counter() - started
        cases = check_memory_model(
            memory_model, checked, sides, time_repeats=repeats, device=device, progress=progress
        )
    by_strategy = {
        strategy: summarise([case for case in cases if case.strategy == strategy])
        for strategy in dict.fromkeys(case.strategy for case in cases)
    }
    payload: dict[str, object] = {
        "model": model,
        "device": device,
        "threads": torch.get_num_threads(),
        "image_sizes": list(sides),
        "fitted_batch_sizes": list(fitted),
        "held_out_batch_sizes": list(checked),
        "num_stages": memory_model.length,
        "fit_s": fit_s,
        "cases": [case.to_dict() for case in cases],
        **summarise(cases),
        "by_strategy": by_strategy,
        "memory_model": memory_model.to_dict(),
    }
    if plot is not None:
        from edgefleet.plots import plot_memory_model

        plot_memory_model(model, cases, plot)
    if as_json:
        print_json(payload)
        return
    typer.echo(
        f"{model} on {device}: {memory_model.length} stages, fitted on batches {batch_sizes} "
        f"at {image_sizes} px in {fit_s:.1f} s"
    )
    typer.echo(
        f"{'px':>5}{'batch':>7}  {'strategy':<11}{'pred MiB':>10}{'meas MiB':>10}{'error':>9}"
        f"{'pred s':>9}{'meas s':>9}"
    )
    for case in cases:
        typer.echo(
            f"{case.image_size:>5}{case.batch_size:>7}  {case.strategy:<11}"
            f"{case.predicted_peak_bytes / 2**20:>10.1f}{case.measured_peak_bytes / 2**20:>10.1f}"
            f"{case.error:>+9.2%}{case.predicted_time_s:>9.3f}{case.measured_time_s:>9.3f}"
        )
    summary = summarise(cases)
    typer.echo(
        f"peak error: median {summary['median_abs_err']:.2%}, max {summary['max_abs_err']:.2%}; "
        f"step time error: median {summary['median_abs_time_err']:.1%}, "
        f"max {summary['max_abs_time_err']:.1%}"
    )


@app.command("budget")
def bench_budget(
    model: Annotated[str, typer.Option("--model", help="torchvision model name.")],
    image_size: Annotated[int, typer.Option("--image-size", help="Square image side, pixels.")],
    memory_budget: Annotated[
        str, typer.Option("--memory-budget", help="RAM the process may use, e.g. 1.75GiB.")
    ],
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps per run.", min=1)] = 3,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classifier outputs.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Plan the largest batch for a budget, then prove it under a real memory cap."""
    from checkpointing.planning.planner import PlanRequest
    from checkpointing.planning.units import format_size
    from edgefleet import measurements
    from edgefleet.budget_proof import prove_budget

    budget_bytes = memory_budget_bytes(memory_budget)
    known_models(model)
    try:
        request = PlanRequest(image_size=image_size, budget_bytes=budget_bytes)
    except ValueError as exc:
        fail(str(exc))
    with stderr_progress() as report:
        student = measurements.memory_model(model, num_classes, report)
        facts = measurements.process_facts(model, image_size, num_classes, report)
        proof = prove_budget(student, facts, request, steps, report)
    payload = proof.to_dict()
    if as_json:
        print_json(payload)
        return
    plan = payload["plan"]
    typer.echo(
        f"cap {format_size(payload['cap_bytes'])} ({payload['cap_mechanism']}): plan batch "
        f"{plan['batch_size']} ({plan['strategy']}) survived={plan['survived']}, peak RSS "
        f"{format_size(plan['peak_rss_bytes'] or 0)} (predicted "
        f"{format_size(plan['predicted_peak_bytes'])})"
    )
    same = payload["store_all_same_batch"]
    typer.echo(f"store-all at batch {plan['batch_size']}: survived={same['survived']}")
    typer.echo(f"store-all's largest batch: {payload['store_all_max_batch']}")


@app.command("aggregation")
def bench_aggregation(
    nodes: Annotated[
        int, typer.Option("--nodes", help="Simulated boards, one client process each.")
    ] = 100,
    model: Annotated[str, typer.Option("--model", help="The student (torchvision name).")] = (
        "mobilenet_v2"
    ),
    image_size: Annotated[
        int, typer.Option("--image-size", help="The job's square image side, pixels.")
    ] = 224,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classifier outputs.")] = 1000,
    memory_budget: Annotated[
        str, typer.Option("--memory-budget", help="What every simulated board states.")
    ] = "8GiB",
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Limit of the timed part, seconds.")
    ] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time N boards' full-size updates into a real coordinator, until the round is aggregated."""
    from checkpointing.planning.units import format_size
    from edgefleet.fleet_bench import AggregationBenchConfig, BenchError, run_aggregation_bench

    if nodes < 1:
        fail(f"--nodes must be at least 1, got {nodes}")
    budget_bytes = memory_budget_bytes(memory_budget)
    known_models(model)
    try:
        config = AggregationBenchConfig(
            nodes=nodes,
            model=model,
            image_size=image_size,
            num_classes=num_classes,
            memory_budget_bytes=budget_bytes,
            timeout_s=timeout_s,
        )
    except ValueError as exc:
        fail(str(exc))
    try:
        with stderr_progress() as progress:
            result = run_aggregation_bench(config, progress)
    except BenchError as exc:
        fail(str(exc), code=1)
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(
        f"{result.nodes} updates of {result.model} at {result.image_size}px "
        f"({format_size(result.update_bytes)} each): received and aggregated in "
        f"{result.aggregate_s:.2f} s"
    )
    typer.echo(
        f"  last update accepted after {result.upload_s:.2f} s (first {result.first_verdict_s:.2f}"
        f" s); the coordinator's aggregation took {result.aggregation_s:.2f} s"
    )
    typer.echo(
        f"  coordinator: peak RSS {format_size(result.coordinator_peak_rss_bytes)}, "
        f"{result.coordinator_cpu_s:.1f} CPU-s in the timed part (boards "
        f"{result.boards_cpu_s:.1f}, anything else {result.other_cpu_s:.1f})"
    )


@app.command("fleet-api")
def bench_fleet_api(
    nodes: Annotated[int, typer.Option("--nodes", help="Simulated idle boards.")] = 1000,
    seconds: Annotated[
        float, typer.Option("--seconds", help="Length of the measured window.")
    ] = 30.0,
    processes: Annotated[
        int | None,
        typer.Option("--processes", help="Load processes (default: one per 500 boards)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Latency of Heartbeat and PullTask while N idle boards call at the coordinator's cadence."""
    from edgefleet.fleet_bench import BenchError, FleetApiBenchConfig, run_fleet_api_bench

    if nodes < 1:
        fail(f"--nodes must be at least 1, got {nodes}")
    if not seconds > 0:
        fail(f"--seconds must be positive, got {seconds}")
    if processes is not None and not 1 <= processes <= nodes:
        fail(f"--processes must be from 1 to --nodes ({nodes}), got {processes}")
    try:
        config = FleetApiBenchConfig(nodes=nodes, seconds=seconds, processes=processes)
    except ValueError as exc:
        fail(str(exc))
    try:
        with stderr_progress() as progress:
            result = run_fleet_api_bench(config, progress)
    except BenchError as exc:
        fail(str(exc), code=1)
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(
        f"{result.nodes} boards for {result.seconds:g} s: {result.requests} calls "
        f"({result.requests_per_s:.0f}/s), p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
        f"max {result.max_ms:.1f} ms, {result.errors} errors"
    )
    for method, summary in result.by_method.items():
        typer.echo(
            f"  {method:<10} {summary.requests:>7} calls, p50 {summary.p50_ms:.1f} ms, "
            f"p99 {summary.p99_ms:.1f} ms"
        )
    typer.echo(
        f"  coordinator {result.coordinator_cpu_s:.1f} CPU-s, load processes "
        f"{result.load_generator_cpu_s:.1f}, anything else {result.other_cpu_s:.1f} in the window"
    )
