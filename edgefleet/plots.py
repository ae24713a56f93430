"""PNG plots for docs/: written with matplotlib's non-interactive backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from checkpointing.benchmark import (
    CHECKPOINT_SEQUENTIAL,
    OPTIMAL,
    STORE_ALL,
    BenchResult,
)

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
