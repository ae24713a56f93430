"""Revolve (Griewank & Walther) for chains of identical stages: the seed's dynamic programme.

``Opt[l, c]`` is the cost of reversing ``l`` stages followed by the loss with ``c`` checkpoints
(the one holding the input included), where a forward step costs ``uf`` and the backward of a
stage (with its recorded forward) or of the loss costs ``ub``::

    Opt[0, c] = ub
    Opt[l, 1] = l (l + 1) / 2 uf + (l + 1) ub
    Opt[1, c] = uf + 2 ub
    Opt[l, c] = min_{1 <= i <= l - 1} (i uf + Opt[l - i, c - 1] + Opt[i - 1, c])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from checkpointing.planning.schedule import Op, OpKind, Schedule
from checkpointing.planning.solvers.baselines import advance, reverse_step


@dataclass(frozen=True)
class RevolveSolution:
    cost: float
    schedule: Schedule


def revolve_table(steps: int, checkpoints: int, uf: float = 1.0, ub: float = 1.0) -> np.ndarray:
    """``Opt[l, c]`` for ``l <= steps`` and ``c <= checkpoints`` (``inf`` where ``c = 0``)."""
    _validate(steps, checkpoints, uf, ub)
    opt = np.full((steps + 1, checkpoints + 1), np.inf)
    if checkpoints == 0:
        return opt
    lengths = np.arange(steps + 1, dtype=np.float64)
    opt[:, 1] = lengths * (lengths + 1) / 2 * uf + (lengths + 1) * ub
    opt[0, 1:] = ub
    if steps >= 1:
        opt[1, 1:] = uf + 2 * ub
    for c in range(2, checkpoints + 1):
        for length in range(2, steps + 1):
            i = np.arange(1, length)
            opt[length, c] = np.min(i * uf + opt[length - i, c - 1] + opt[i - 1, c])
    return opt


def revolve(steps: int, checkpoints: int, uf: float = 1.0, ub: float = 1.0) -> RevolveSolution:
    """The optimal Revolve schedule for ``steps`` stages plus the loss."""
    opt = revolve_table(steps, checkpoints, uf, ub)
    if checkpoints < 1:
        raise ValueError("revolve needs at least one checkpoint (the one holding the input)")
    ops: list[Op] = []
    # Explicit stack instead of recursion: long chains would exceed Python's recursion limit.
    stack: list[tuple[int, int, int]] = [(0, steps, checkpoints)]
    while stack:
        start, end, c = stack.pop()
        length = end - start
        if length == 0:
            ops += reverse_step(end, steps)
        elif c == 1:
            for stage in range(end, start - 1, -1):
                ops += advance(start, stage)
                ops += reverse_step(stage, steps)
        elif length == 1:
            ops.append(Op(OpKind.FORWARD_CHECK, start))
            ops += reverse_step(end, steps)
            ops += reverse_step(start, steps)
        else:
            i = _best_split(opt, length, c, uf)
            ops += advance(start, start + i)
            # Right part first (stored checkpoint at start + i), then the left part.
            stack.append((start, start + i - 1, c))
            stack.append((start + i, end, c - 1))
    return RevolveSolution(
        cost=float(opt[steps, checkpoints]), schedule=Schedule(steps, tuple(ops))
    )


def _best_split(opt: np.ndarray, length: int, c: int, uf: float) -> int:
    i = np.arange(1, length)
    return int(i[np.argmin(i * uf + opt[length - i, c - 1] + opt[i - 1, c])])


def closed_form_forward_steps(steps: int, checkpoints: int) -> int:
    """Griewank & Walther's minimal number of forward steps, for ``steps`` stages plus the loss.

    With ``n = steps + 1`` reversal steps and ``c`` checkpoints, let ``r`` be the smallest integer
    with ``binom(c + r, c) >= n``; the minimum is ``r n - binom(c + r, c + 1)``.
    """
    _validate(steps, checkpoints, 1.0, 1.0)
    if checkpoints < 1:
        raise ValueError("the closed form needs at least one checkpoint")
    n = steps + 1
    r = 0
    while math.comb(checkpoints + r, checkpoints) < n:
        r += 1
    return r * n - math.comb(checkpoints + r, checkpoints + 1)


def _validate(steps: int, checkpoints: int, uf: float, ub: float) -> None:
    if steps < 0:
        raise ValueError(f"steps must not be negative, got {steps}")
    if checkpoints < 0:
        raise ValueError(f"checkpoints must not be negative, got {checkpoints}")
    for name, value in (("uf", uf), ("ub", ub)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite non-negative number, got {value}")
