"""Measure what a board's training process holds beyond its tensors (torch side).

The planner's whole-process terms need two facts only the board can give: its runtime baseline
(the process's RSS once torch and torchvision are imported) and its allocator overhead (RSS
beyond live tensors at the peak). Both are measured by training for real in a child process
(``checkpointing.train_child``) at two small batch sizes; the overhead is fitted as a constant
plus a fraction of the live tensor bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from checkpointing.budget import ProcessFacts
from checkpointing.hardcap import TrainJob, run_capped

DEFAULT_BATCH_SIZES = (2, 6)
_GENEROUS_CAP_BYTES = 16 * 2**30
_TIMEOUT_S = 900.0


class CalibrationError(RuntimeError):
    """A calibration run that did not finish (it names what the child reported)."""


def calibrate_process(
    model: str,
    image_size: int,
    num_classes: int,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    steps: int = 2,
) -> ProcessFacts:
    """Runtime baseline and allocator overhead of training ``model`` on this machine."""
    if len(batch_sizes) != 2 or batch_sizes[0] >= batch_sizes[1]:
        raise ValueError(f"give two increasing batch sizes, got {list(batch_sizes)}")
    readings: list[tuple[int, int, int]] = []
    for batch_size in batch_sizes:
        job = TrainJob(
            model=model,
            image_size=image_size,
            batch_size=batch_size,
            num_classes=num_classes,
            steps=steps,
        )
        run = run_capped(job, _GENEROUS_CAP_BYTES, _TIMEOUT_S)
        if not run.survived or run.result is None:
            raise CalibrationError(
                f"calibration run of {model} at batch {batch_size} failed ({run.failure}): "
                f"{run.stderr_tail[-500:]}"
            )
        result = run.result
        readings.append(
            (
                int(result["baseline_rss_bytes"]),
                int(result["live_tensor_peak_bytes"]),
                int(result["allocator_overhead_bytes"]),
            )
        )
    (baseline_a, live_a, overhead_a), (baseline_b, live_b, overhead_b) = readings
    fraction = (overhead_b - overhead_a) / (live_b - live_a) if live_b > live_a else 0.0
    fraction = min(max(fraction, 0.0), 0.99)
    constant = max(overhead_a - fraction * live_a, overhead_b - fraction * live_b, 0.0)
    return ProcessFacts(
        runtime_baseline_bytes=max(baseline_a, baseline_b),
        allocator_overhead_fraction=fraction,
        allocator_overhead_bytes=int(constant),
    )


def overhead_fraction_of(job: TrainJob) -> float:
    """Allocator overhead per live tensor byte of one real run of ``job`` (uncapped in effect).

    The overhead depends on how much a run allocates and frees: recomputation churns through
    blocks of many sizes and the allocator keeps more of them than a store-all step does. A plan
    is therefore checked by running it, and re-planned with what that run measured.
    """
    run = run_capped(job, _GENEROUS_CAP_BYTES, _TIMEOUT_S)
    if not run.survived or run.result is None:
        raise CalibrationError(
            f"calibration run of {job.model} at batch {job.batch_size} failed ({run.failure}): "
            f"{run.stderr_tail[-500:]}"
        )
    live = int(run.result["live_tensor_peak_bytes"])
    overhead = int(run.result["allocator_overhead_bytes"])
    return min(max(overhead / live, 0.0), 0.99) if live > 0 else 0.0
