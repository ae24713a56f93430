"""What the demo shows: one table, one JSON object, one plot of accuracy per round per board."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from checkpointing.planning.units import format_size


@dataclass(frozen=True)
class BoardOutcome:
    name: str
    hardware_class: str
    cap_bytes: int
    training_share_bytes: int
    """What the board's class leaves to training on arm64 (RAM − OS reserve − the arm64
    runtime); the cap is this machine's runtime baseline plus it."""
    batch_size: int
    store_all_max_batch: int
    strategy: str
    predicted_peak_bytes: int
    measured_peak_bytes: int
    accuracy_before: float
    accuracy_after: float


@dataclass(frozen=True)
class DemoResult:
    boards: Sequence[BoardOutcome]
    teacher_accuracy: float
    """The teacher's mean accuracy over the boards' viewpoints: the students' ceiling."""
    fleet_accuracy_before: float
    fleet_accuracy_after: float
    elapsed_s: float
    accuracy_by_round: dict[str, list[float]]
    """Per board, the global student's accuracy on its viewpoint after each model version."""
    oom_kills: int
    runtime_baseline_bytes: int
    """This machine's agent runtime (VmRSS after imports and warm-up) under every cap."""

    def to_dict(self) -> dict[str, object]:
        return {
            "boards": [asdict(board) for board in self.boards],
            "teacher_accuracy": self.teacher_accuracy,
            "fleet_accuracy_before": self.fleet_accuracy_before,
            "fleet_accuracy_after": self.fleet_accuracy_after,
            "elapsed_s": self.elapsed_s,
            "runtime_baseline_bytes": self.runtime_baseline_bytes,
        }


def table(result: DemoResult) -> str:
    header = (
        f"{'board':<10} {'class':<18} {'share':>9} {'cap':>9} {'batch':>5} {'store-all':>9} "
        f"{'schedule':<9} {'predicted':>9} {'measured':>9} {'before':>7} {'after':>7}"
    )
    lines = [header, "-" * len(header)]
    for board in result.boards:
        lines.append(
            f"{board.name:<10} {board.hardware_class:<18} "
            f"{format_size(board.training_share_bytes):>9} {format_size(board.cap_bytes):>9} "
            f"{board.batch_size:>5} {board.store_all_max_batch:>9} {board.strategy:<9} "
            f"{format_size(board.predicted_peak_bytes):>9} "
            f"{format_size(board.measured_peak_bytes) if board.measured_peak_bytes else '-':>9} "
            f"{board.accuracy_before:>7.1%} {board.accuracy_after:>7.1%}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"cap = this machine's agent runtime ({format_size(result.runtime_baseline_bytes)}) + "
        "share; share = the class's RAM - OS reserve - the agent's runtime on arm64"
    )
    lines.append(
        f"fleet average: {result.fleet_accuracy_before:.1%} -> {result.fleet_accuracy_after:.1%}"
        f"   teacher (ceiling): {result.teacher_accuracy:.1%}   "
        f"out-of-memory kills: {result.oom_kills}   elapsed: {result.elapsed_s:.0f} s"
    )
    return "\n".join(lines)


def plot(result: DemoResult, teacher_by_board: dict[str, float], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, (name, accuracies) in enumerate(result.accuracy_by_round.items()):
        colour = f"C{index}"
        axes.plot(range(len(accuracies)), accuracies, marker="o", color=colour, label=name)
        axes.axhline(teacher_by_board[name], color=colour, linestyle=":", linewidth=1)
    axes.set_xlabel("model version (0: eye-level student; n: after round n)")
    axes.set_ylabel("accuracy on the board's own viewpoint")
    axes.set_ylim(0, 1)
    axes.set_title("Fleet student per board (dotted: the teacher on that viewpoint)")
    axes.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
