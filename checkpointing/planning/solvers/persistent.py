"""The persistent DP for heterogeneous chains.

The model of Beaumont, Eyraud-Dubois, Herrmann, Joly & Shilova (2019), rotor's "persistent" one.

Given a chain and a memory budget (the input included), return the fastest schedule whose peak,
as ``checkpointing.planning.simulate`` predicts it, stays within the budget: the exact optimum over
persistent schedules of the model in ``docs/checkpointing.md``. Real sizes are discretised into
memory slots, each size rounded up and the budget down, so a plan that fits in slots fits in
bytes; a chain whose sizes and budget are whole numbers no larger than the slot count is solved
in its own units exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Op, OpKind, Schedule
from checkpointing.planning.simulate import simulate
from checkpointing.planning.solvers import persistent_tables as tables
from checkpointing.planning.solvers.baselines import advance, reverse_step

DEFAULT_SLOTS = 500


@dataclass(frozen=True)
class PersistentSolution:
    feasible: bool
    budget: float
    min_budget: float
    """Smallest budget with which the chain can run at all (exact, in the chain's units)."""
    slots: int
    slot_size: float
    solve_s: float
    schedule: Schedule | None = None
    makespan: float = math.inf
    peak: float = math.inf


@dataclass(frozen=True)
class _Discrete:
    fw: np.ndarray
    bw: np.ndarray
    cw: np.ndarray
    cbw: np.ndarray
    ftmp: np.ndarray
    fntmp: np.ndarray
    bwd: np.ndarray
    budget_slots: int
    slot_size: float


def _extended(chain: Chain) -> tuple[np.ndarray, ...]:
    """The DP's arrays: the loss as stage ``L`` (no forward time, output or tape), and ``bwd``.

    ``bwd[s]`` is what ``Bwd_s`` needs (see ``persistent_tables``): the incoming gradient counts
    on its own only when the tape saved the output it would otherwise replace.
    """
    fw = np.array([*chain.fw, 0.0], dtype=np.float64)
    bw = np.array(chain.bw, dtype=np.float64)
    cw = np.array([*chain.cw, 0.0], dtype=np.float64)
    cbw = np.array([*chain.cbw, 0.0], dtype=np.float64)
    ftmp = np.array([*chain.ftmp, 0.0], dtype=np.float64)
    fntmp = np.array([*chain.forward_nograd_tmp, 0.0], dtype=np.float64)
    saved = np.array([*chain.output_saved, True], dtype=np.float64)
    bwd = saved * cw[1:] + cbw[1:] + np.array(chain.btmp, dtype=np.float64)
    return fw, bw, cw, cbw, ftmp, fntmp, bwd


def discretise(chain: Chain, budget: float, slots: int) -> _Discrete:
    fw, bw, cw, cbw, ftmp, fntmp, bwd = _extended(chain)
    if chain.is_integral and float(budget).is_integer() and budget <= slots:
        slot_size = 1.0
        budget_slots = int(budget)
    else:
        slot_size = budget / slots
        budget_slots = slots

    def to_slots(values: np.ndarray) -> np.ndarray:
        # Round up, so that whatever fits in slots fits in real units.
        return np.ceil(values / slot_size - 1e-9).astype(np.int64)

    return _Discrete(
        fw,
        bw,
        to_slots(cw),
        to_slots(cbw),
        to_slots(ftmp),
        to_slots(fntmp),
        to_slots(bwd),
        budget_slots,
        slot_size,
    )


def min_budget(chain: Chain) -> float:
    """The smallest budget (the input included) with which any persistent schedule runs."""
    _, _, cw, cbw, ftmp, fntmp, bwd = _extended(chain)
    need = tables.min_peak_compiled(cw, cbw, ftmp, fntmp, bwd)
    return float(cw[0] + need[0, chain.length])


def solve_persistent(
    chain: Chain, budget: float, slots: int = DEFAULT_SLOTS, *, compiled: bool = True
) -> PersistentSolution:
    """The fastest schedule of ``chain`` within ``budget``; ``feasible=False`` if none fits."""
    if not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a positive number, got {budget}")
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    started = time.perf_counter()
    discrete = discretise(chain, budget, slots)
    smallest = min_budget(chain)
    free = discrete.budget_slots - int(discrete.cw[0])
    if free < 0:
        return _infeasible(chain, budget, smallest, discrete, started)
    fill = tables.tables_compiled if compiled else tables.tables_numpy
    opt, what = fill(
        discrete.fw,
        discrete.bw,
        discrete.cw,
        discrete.cbw,
        discrete.ftmp,
        discrete.fntmp,
        discrete.bwd,
        free,
    )
    if not math.isfinite(opt[0, chain.length, free]):
        return _infeasible(chain, budget, smallest, discrete, started)
    schedule = _reconstruct(chain.length, what, discrete, free)
    solve_s = time.perf_counter() - started
    simulation = simulate(chain, schedule)
    return PersistentSolution(
        feasible=True,
        budget=budget,
        min_budget=smallest,
        slots=discrete.budget_slots,
        slot_size=discrete.slot_size,
        solve_s=solve_s,
        schedule=schedule,
        makespan=simulation.makespan,
        peak=simulation.peak,
    )


def _infeasible(
    chain: Chain, budget: float, smallest: float, discrete: _Discrete, started: float
) -> PersistentSolution:
    return PersistentSolution(
        feasible=False,
        budget=budget,
        min_budget=smallest,
        slots=discrete.budget_slots,
        slot_size=discrete.slot_size,
        solve_s=time.perf_counter() - started,
    )


def _reconstruct(length: int, what: np.ndarray, discrete: _Discrete, free: int) -> Schedule:
    ops: list[Op] = []
    # Explicit stack instead of recursion: long chains would exceed Python's recursion limit.
    # Items are either a sub-problem (s, e, m) or a single operation to emit.
    stack: list[tuple[int, int, int] | Op] = [(0, length, free)]
    while stack:
        item = stack.pop()
        if isinstance(item, Op):
            ops.append(item)
            continue
        s, e, m = item
        choice = int(what[s, e, m])
        assert choice != tables.INFEASIBLE, "reconstruction follows feasible choices only"
        if choice == tables.SINGLE:
            ops += reverse_step(s, length)
        elif choice == tables.CHAIN:
            ops.append(Op(OpKind.FORWARD_ENABLE, s))
            stack.append(Op(OpKind.BACKWARD, s))
            stack.append((s + 1, e, m - int(discrete.cbw[s + 1])))
        else:
            j = choice
            ops += advance(s, j)
            stack.append((s, j - 1, m))
            stack.append((j, e, m - int(discrete.cw[j])))
    return Schedule(length, tuple(ops))
