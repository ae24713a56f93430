"""Measure what a board's training process holds beyond its tensors (torch side).

The planner's whole-process terms need two facts only the board can give: its runtime baseline
(the process's RSS once torch and torchvision are imported) and its allocator overhead (RSS
beyond live tensors at the peak). Both are measured by training for real in a child process
(``edgefleet.harness.train_child``) at two small batch sizes; the overhead is fitted as a constant
plus a fraction of the live tensor bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from checkpointing.planning.budget import ProcessFacts
from edgefleet.harness.hardcap import TrainJob, run_capped

DEFAULT_BATCH_SIZES = (2, 6)
_GENEROUS_CAP_BYTES = 16 * 2**30
_TIMEOUT_S = 900.0
OVERHEAD_FRACTION_CEILING = 0.99
"""``ProcessFacts`` wants a fraction below 1."""


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
    return fit_process_facts(readings)


def fit_process_facts(readings: Sequence[tuple[int, int, int]]) -> ProcessFacts:
    """Process facts from two runs' ``(baseline, live tensor peak, overhead)`` bytes: the overhead
    a constant plus a fraction of the live tensor bytes, the baseline the larger of the two.

    Public so that a caller measuring elsewhere (an emulated board, whose figures are the guest's
    own rather than the child's) fits its readings the same way.
    """
    if len(readings) != 2:
        raise ValueError(f"give two calibration readings, got {len(readings)}")
    (baseline_a, live_a, overhead_a), (baseline_b, live_b, overhead_b) = readings
    fraction = (overhead_b - overhead_a) / (live_b - live_a) if live_b > live_a else 0.0
    fraction = min(max(fraction, 0.0), OVERHEAD_FRACTION_CEILING)
    constant = max(overhead_a - fraction * live_a, overhead_b - fraction * live_b, 0.0)
    return ProcessFacts(
        runtime_baseline_bytes=max(baseline_a, baseline_b),
        allocator_overhead_fraction=fraction,
        allocator_overhead_bytes=int(constant),
    )


def overhead_fraction(overhead_bytes: int, live_bytes: int) -> float:
    """A run's overhead per live tensor byte, clamped to what ``ProcessFacts`` accepts."""
    if live_bytes <= 0:
        return 0.0
    return min(max(overhead_bytes / live_bytes, 0.0), OVERHEAD_FRACTION_CEILING)


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
    return overhead_fraction(
        int(run.result["allocator_overhead_bytes"]), int(run.result["live_tensor_peak_bytes"])
    )
