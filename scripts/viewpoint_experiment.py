"""The fleet demo's learning problem, simulated centrally in one process: does distillation on
the boards' own viewpoints, averaged over rounds, close the viewpoint gap?

    .venv/bin/python scripts/viewpoint_experiment.py [--json results.json]

1. Renders the teacher's labelled frames (broad viewpoint mixture) and the eye-level student's,
   then trains both (all cores).
2. Renders, for each of the four pole boards, its unlabelled training frames and its labelled
   evaluation frames (evaluation split: never trained on, by anyone).
3. Rounds: each board starts from the global student and runs ``local_steps`` distillation steps
   on its own frames (one thread, as a board agent runs; its CPU time is measured); the global
   student becomes the sample-weighted average of the boards' students.

Prints the accuracy of the teacher and of the student before and after, per viewpoint, and the
wall and CPU time of every phase; ``--json`` also writes them. Settings: ``DemoSettings``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from checkpointing.execution.training import distillation_loss, forward_backward, optimizer_for
from edgefleet.demo.models import (
    DEMO,
    DemoSettings,
    build,
    evaluate,
    to_input,
    train_supervised,
)
from viewpoint.dataset import Split, render_frames
from viewpoint.viewpoints import BROAD


@contextmanager
def _timed(phase: str, timings: dict[str, dict[str, float]]) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[phase] = {
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
    }
    print(f"  {phase}: {timings[phase]['wall_s']:.1f} s wall", file=sys.stderr, flush=True)


def _pretrained(
    name: str,
    settings: DemoSettings,
    render: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    phase: str,
    timings: dict[str, dict[str, float]],
) -> torch.nn.Module:
    with _timed(f"render {phase}", timings):
        frames, labels = render()
    model = build(name, settings)
    with _timed(f"train {phase}", timings):
        train_supervised(
            model,
            frames,
            labels,
            epochs,
            settings.pretrain_batch_size,
            settings.pretrain_learning_rate,
            settings.seed,
        )
    return model


def _render_rate(settings: DemoSettings, count: int = 400) -> dict[str, float]:
    """Frames per second of one process rendering (scene sampling included), by CPU time."""
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    render_frames(BROAD, count, 99, Split.TRAIN, settings.image_size)
    cpu_s, wall_s = time.process_time() - started_cpu, time.perf_counter() - started_wall
    return {"frames_per_cpu_s": round(count / cpu_s), "frames_per_wall_s": round(count / wall_s)}


# The rounds of this experiment, simulated in one process: a board's distillation (as the agent
# runs it) and federated averaging (as the coordinator does it, in torch here).


def distill_step(
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    frames: torch.Tensor,
    temperature: float,
) -> float:
    """One plain-autograd SGD step of ``student`` towards ``teacher`` on a batch of frames, the
    loss the agent uses (KL to the teacher's softened predictions, times T²); its value."""
    inputs = to_input(frames)
    optimizer.zero_grad(set_to_none=True)
    loss = forward_backward(
        student, [], None, inputs, distillation_loss(teacher, inputs, temperature)
    )
    optimizer.step()
    return loss


def local_training(
    student: nn.Module,
    teacher: nn.Module,
    frames: torch.Tensor,
    settings: DemoSettings,
    generator: torch.Generator,
) -> float:
    """A board's round: ``local_steps`` distillation steps on batches drawn at random (with
    replacement, as the agent draws them) from its frames, a fresh optimizer; mean loss."""
    student.train()
    teacher.eval()
    optimizer = optimizer_for(
        settings.optimizer, list(student.parameters()), settings.learning_rate
    )
    losses = []
    for _ in range(settings.local_steps):
        picked = torch.randint(0, len(frames), (settings.batch_size,), generator=generator)
        losses.append(
            distill_step(student, teacher, optimizer, frames[picked], settings.temperature)
        )
    return sum(losses) / len(losses)


def average_states(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Federated averaging: the ``weights``-weighted mean of state dicts, buffers included;
    integer counters (batch norm's ``num_batches_tracked``) keep the first state's value."""
    if not states or len(states) != len(weights) or sum(weights) <= 0:
        raise ValueError("need one positive weight per state, and some states")
    total = float(sum(weights))
    averaged: dict[str, torch.Tensor] = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            averaged[name] = first.clone()
            continue
        averaged[name] = sum(
            (state[name] * (weight / total) for state, weight in zip(states, weights, strict=True)),
            torch.zeros_like(first),
        )
    return averaged


def run(settings: DemoSettings, workers: int, threads: int) -> dict[str, object]:
    timings: dict[str, dict[str, float]] = {}
    rendering = _render_rate(settings)
    print(f"  rendering: {rendering['frames_per_cpu_s']} frames/s on one core", file=sys.stderr)
    torch.set_num_threads(threads)
    teacher = _pretrained(
        settings.teacher,
        settings,
        lambda: settings.teacher_set().render(settings.image_size, workers),
        settings.teacher_epochs,
        "teacher",
        timings,
    )
    student = _pretrained(
        settings.student,
        settings,
        lambda: settings.student_set().render(settings.image_size, workers),
        settings.student_epochs,
        "eye-level student",
        timings,
    )
    with _timed("render boards", timings):
        boards = [
            (settings.board_train_set(b).render(settings.image_size, workers)[0],
             settings.board_eval_set(b).render(settings.image_size, workers))
            for b in range(len(settings.boards))
        ]  # fmt: skip
        eye_frames, eye_labels = settings.eye_level_eval_set().render(settings.image_size, workers)

    # A board agent trains on one thread; so do the simulated boards.
    torch.set_num_threads(1)
    teacher_acc = [evaluate(teacher, *held_out) for _, held_out in boards]
    before = [evaluate(student, *held_out) for _, held_out in boards]
    eye_level = {
        "teacher": evaluate(teacher, eye_frames, eye_labels),
        "student": evaluate(student, eye_frames, eye_labels),
    }
    by_round: list[list[float]] = []
    board_cpu_s: list[list[float]] = []
    with _timed("rounds", timings):
        for round_index in range(settings.rounds):
            states, weights, cpu = [], [], []
            for board, (frames, _) in enumerate(boards):
                local = copy.deepcopy(student)
                generator = torch.Generator().manual_seed(
                    1000 * settings.seed + 10 * round_index + board
                )
                started = time.process_time()
                local_training(local, teacher, frames, settings, generator)
                cpu.append(round(time.process_time() - started, 2))
                states.append(local.state_dict())
                weights.append(float(settings.local_steps * settings.batch_size))
            student.load_state_dict(average_states(states, weights))
            board_cpu_s.append(cpu)
            by_round.append([evaluate(student, *held_out) for _, held_out in boards])
            print(
                f"  round {round_index + 1}: "
                + " ".join(f"{a:.3f}" for a in by_round[-1])
                + f"  board CPU {max(cpu):.1f} s at most",
                file=sys.stderr,
                flush=True,
            )
    return {
        "settings": asdict(settings),
        "boards": list(settings.boards),
        "teacher": teacher_acc,
        "student_before": before,
        "student_after": by_round[-1],
        "student_by_round": by_round,
        "eye_level": eye_level,
        "board_cpu_s": board_cpu_s,
        "timings": timings,
        "rendering": rendering,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _table(results: dict[str, object]) -> str:
    boards = results["boards"]
    teacher, before, after = results["teacher"], results["student_before"], results["student_after"]
    assert isinstance(boards, list) and isinstance(teacher, list)
    assert isinstance(before, list) and isinstance(after, list)
    lines = [
        f"| {'viewpoint':<16} | teacher | student before | student after |  gain  |",
        f"|{'-' * 18}|---------|----------------|---------------|--------|",
    ]
    for name, t, b, a in zip(boards, teacher, before, after, strict=True):
        lines.append(
            f"| {name:<16} | {100 * t:6.1f}  | {100 * b:13.1f}  | {100 * a:12.1f}  | "
            f"{100 * (a - b):+6.1f} |"
        )
    t, b, a = _mean(teacher), _mean(before), _mean(after)
    lines.append(
        f"| {'mean':<16} | {100 * t:6.1f}  | {100 * b:13.1f}  | {100 * a:12.1f}  | "
        f"{100 * (a - b):+6.1f} |"
    )
    return "\n".join(lines)


def _checks(results: dict[str, object]) -> list[tuple[str, bool]]:
    teacher, before, after = results["teacher"], results["student_before"], results["student_after"]
    eye_level, timings, board_cpu = results["eye_level"], results["timings"], results["board_cpu_s"]
    assert isinstance(teacher, list) and isinstance(before, list) and isinstance(after, list)
    assert isinstance(eye_level, dict) and isinstance(timings, dict)
    assert isinstance(board_cpu, list)
    pretrain_s = timings["train teacher"]["wall_s"] + timings["train eye-level student"]["wall_s"]
    return [
        ("teacher >= 85 % on every pole viewpoint", min(teacher) >= 0.85),
        ("eye-level student >= 85 % at eye level", eye_level["student"] >= 0.85),
        ("eye-level student >= 20 points below the teacher on the poles",
         _mean(teacher) - _mean(before) >= 0.20),
        ("every board gains >= 15 points",
         all(a - b >= 0.15 for a, b in zip(after, before, strict=True))),
        ("fleet average within 5 points of the teacher", _mean(teacher) - _mean(after) <= 0.05),
        (f"teacher + student training <= 120 s ({pretrain_s:.0f} s)", pretrain_s <= 120.0),
        ("each board's round <= 10 s of CPU",
         max(max(cpu) for cpu in board_cpu) <= 10.0),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for pretraining")
    parser.add_argument("--seed", type=int, default=DEMO.seed, help="base of every seed")
    args = parser.parse_args()
    results = run(replace(DEMO, seed=args.seed), args.workers, args.threads)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    eye_level = results["eye_level"]
    assert isinstance(eye_level, dict)
    print(
        f"\neye level: teacher {100 * eye_level['teacher']:.1f} %, "
        f"eye-level student {100 * eye_level['student']:.1f} %"
    )
    print("\n".join(f"{'ok  ' if ok else 'FAIL'} {what}" for what, ok in _checks(results)))


if __name__ == "__main__":
    main()
