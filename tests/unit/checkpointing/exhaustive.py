"""Exhaustive search over persistent schedules, through the simulator: the DP's reference.

Every operation the simulator accepts is tried, with two restrictions that define persistent
schedules and remove only useless work: an activation stored by ``Fc``/``Fn`` is dropped by a
later ``Fn`` only right after it was computed (a stored checkpoint stays until its backward), and
no forward is run for a stage whose gradient already exists.
"""

from __future__ import annotations

import heapq
import itertools
import math

from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Op, OpKind
from checkpointing.planning.simulate import ChainState, ScheduleError


def _candidates(state: ChainState, last: Op | None) -> list[Op]:
    length = state.chain.length
    done_from = min(state.grads, default=length + 1)
    ops: list[Op] = []
    if length not in state.grads:
        ops.append(Op(OpKind.LOSS, length))
    for j in range(length):
        if j < done_from:
            ops.append(Op(OpKind.FORWARD_ENABLE, j))
        if j + 1 < done_from:
            ops.append(Op(OpKind.FORWARD_CHECK, j))
            just_computed = last is not None and last.kind in (
                OpKind.FORWARD_CHECK,
                OpKind.FORWARD_NOGRAD,
            )
            if just_computed and last is not None and last.stage == j - 1:
                ops.append(Op(OpKind.FORWARD_NOGRAD, j))
        ops.append(Op(OpKind.BACKWARD, j))
    return ops


def best_makespan(chain: Chain, budget: float) -> float:
    """Least makespan over persistent schedules whose simulated peak is within ``budget``."""
    start = ChainState(chain)
    if start.memory > budget:
        return math.inf
    counter = itertools.count()
    queue: list[tuple[float, int, ChainState, Op | None]] = [(0.0, next(counter), start, None)]
    settled: set[object] = set()
    while queue:
        time, _, state, last = heapq.heappop(queue)
        key = (state.key(), last)
        if key in settled:
            continue
        settled.add(key)
        if state.finished:
            if not state.tapes and not state.plain:
                return time
            continue
        for op in _candidates(state, last):
            following = state.copy()
            try:
                during, duration = following.apply(op)
            except ScheduleError:
                continue
            if during > budget:
                continue
            heapq.heappush(queue, (time + duration, next(counter), following, op))
    return math.inf


def least_budget(chain: Chain, budgets: list[float]) -> float:
    """The smallest of ``budgets`` (sorted ascending) under which some schedule runs."""
    for budget in budgets:
        if math.isfinite(best_makespan(chain, budget)):
            return budget
    return math.inf
