"""PNG plots for docs/: written with matplotlib's non-interactive backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from edgefleet.harness.benchmark import (
    CHECKPOINT_SEQUENTIAL,
    OPTIMAL,
    STORE_ALL,
    BenchResult,
)
from edgefleet.harness.sampling import HeldOutCase

_STYLE = {
    STORE_ALL: ("s", "black", "store-all"),
    CHECKPOINT_SEQUENTIAL: ("o", "tab:blue", "checkpoint_sequential"),
    OPTIMAL: ("*", "tab:red", "optimal (persistent DP)"),
}


def plot_checkpointing(result: BenchResult, path: Path) -> None:
    """Step time against measured activation peak, one marker per strategy."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for strategy, (marker, colour, label) in _STYLE.items():
        rows = [row for row in result.rows if row.strategy == strategy]
        if not rows:
            continue
        axes.scatter(
            [row.measured_peak_bytes / 2**20 for row in rows],
            [row.step_time_s for row in rows],
            marker=marker,
            color=colour,
            s=90 if strategy == OPTIMAL else 45,
            label=label,
        )
        for row in rows:
            note = f"s={row.segments}" if row.segments else ""
            if row.budget_bytes:
                note = f"≤{row.budget_bytes / 2**20:.0f} MB"
            if note:
                axes.annotate(
                    note,
                    (row.measured_peak_bytes / 2**20, row.step_time_s),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
    axes.set_xlabel("measured activation peak (MiB)")
    axes.set_ylabel("step time (s)")
    axes.set_title(
        f"{result.model}, {result.image_size}×{result.image_size}, batch {result.batch_size}, "
        f"{result.device}"
    )
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_memory_model(model: str, cases: Sequence[HeldOutCase], path: Path) -> None:
    """Held-out cases: predicted against measured activation peak, and the relative error."""
    figure, (peaks, errors) = plt.subplots(1, 2, figsize=(11, 4.8))
    markers = {STORE_ALL: ("s", "store-all"), OPTIMAL: ("*", "optimal schedule")}
    sizes = sorted({case.image_size for case in cases})
    colours = plt.get_cmap("viridis")
    for index, size in enumerate(sizes):
        colour = colours(index / max(len(sizes) - 1, 1))
        for strategy, (marker, label) in markers.items():
            chosen = [c for c in cases if c.image_size == size and c.strategy == strategy]
            if not chosen:
                continue
            measured_mib = [c.measured_peak_bytes / 2**20 for c in chosen]
            style = {"marker": marker, "color": colour, "s": 90 if strategy == OPTIMAL else 45}
            peaks.scatter(
                measured_mib,
                [c.predicted_peak_bytes / 2**20 for c in chosen],
                label=f"{size}×{size}, {label}",
                **style,
            )
            errors.scatter(measured_mib, [100 * c.error for c in chosen], **style)
            for case, x in zip(chosen, measured_mib, strict=True):
                errors.annotate(
                    f"B={case.batch_size}",
                    (x, 100 * case.error),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
    low = min(min(c.measured_peak_bytes, c.predicted_peak_bytes) for c in cases) / 2**20
    high = max(max(c.measured_peak_bytes, c.predicted_peak_bytes) for c in cases) / 2**20
    peaks.plot([low / 1.2, high * 1.2], [low / 1.2, high * 1.2], color="grey", linewidth=0.8)
    peaks.set_xscale("log")
    peaks.set_yscale("log")
    peaks.set_xlabel("measured activation peak (MiB)")
    peaks.set_ylabel("predicted activation peak (MiB)")
    peaks.set_title("predicted against measured")
    peaks.grid(alpha=0.3, which="both")
    peaks.legend(fontsize=8)
    worst = max(100 * abs(c.error) for c in cases)
    errors.axhline(0, color="grey", linewidth=0.8)
    errors.set_xscale("log")
    errors.set_ylim(-max(1.0, 1.3 * worst), max(1.0, 1.3 * worst))
    errors.set_xlabel("measured activation peak (MiB)")
    errors.set_ylabel("error (%): predicted / measured − 1")
    errors.set_title(f"relative error (largest {worst:.2f} %)")
    errors.grid(alpha=0.3, which="both")
    figure.suptitle(f"{model}: memory model fitted on small batches, checked on held-out ones")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
