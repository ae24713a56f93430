"""Predict a schedule's makespan and peak memory on a chain (the model of docs/checkpointing.md).

The simulator is the definition of the memory model: the solvers' recurrences are derived from
it, and tests check them against exhaustive search through it. The executor follows the same
rules, so a measured peak can be compared with a predicted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Op, OpKind, Schedule


class ScheduleError(ValueError):
    """A schedule that cannot run on its chain (an operation whose inputs are not in memory)."""


@dataclass(frozen=True)
class OpTrace:
    op: Op
    peak: float
    """Memory while the operation runs."""
    after: float
    """Memory once it has finished."""


@dataclass(frozen=True)
class Simulation:
    makespan: float
    peak: float
    trace: tuple[OpTrace, ...] = field(repr=False)


class ChainState:
    """What is in memory at one point of a schedule; ``apply`` runs one operation on it."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.plain: set[int] = {0}
        """Indices ``j`` whose activation ``a_j`` is stored on its own (a checkpoint, the input)."""
        self.tapes: set[int] = set()
        """Stages whose tape (output included) is in memory."""
        self.grads: set[int] = set()
        """Indices ``j`` whose gradient ``d_j`` is in memory."""
        self.outputs: set[int] = set()
        """Stages whose tape holds its output only until the output's gradient exists."""
        self.memory: float = chain.cw[0]

    def copy(self) -> ChainState:
        other = ChainState(self.chain)
        other.plain = set(self.plain)
        other.tapes = set(self.tapes)
        other.grads = set(self.grads)
        other.outputs = set(self.outputs)
        other.memory = self.memory
        return other

    def key(self) -> tuple[frozenset[int], ...]:
        return (
            frozenset(self.plain),
            frozenset(self.tapes),
            frozenset(self.grads),
            frozenset(self.outputs),
        )

    @property
    def finished(self) -> bool:
        return 0 in self.grads

    def has_activation(self, j: int) -> bool:
        if j in self.plain:
            return True
        producer = j - 1
        if producer not in self.tapes:
            return False
        return self.chain.output_saved[producer] or producer in self.outputs

    def apply(self, op: Op) -> tuple[float, float]:
        """Run ``op``; return (memory while it runs, its duration). ``ScheduleError`` if invalid."""
        chain = self.chain
        j = op.stage
        length = chain.length
        if op.kind is OpKind.LOSS:
            if length in self.grads:
                raise ScheduleError("the loss has already been computed")
            if not self.has_activation(length):
                raise ScheduleError(f"a_{length} (the loss input) is not in memory")
            during = self.memory + chain.btmp[length]
            self._replace_activation_by_gradient(length)
            return during, chain.bw[length]
        if op.kind.is_forward:
            if not self.has_activation(j):
                raise ScheduleError(f"its input a_{j} is not in memory")
            if op.kind is OpKind.FORWARD_ENABLE:
                if j in self.tapes:
                    raise ScheduleError(f"the tape of stage {j} is already in memory")
                during = self.memory + chain.cbw[j + 1] + chain.ftmp[j]
                self.tapes.add(j)
                self.memory += chain.cbw[j + 1]
                if not chain.output_saved[j]:
                    self.outputs.add(j)
                    if (j + 1) in self.grads:
                        self._drop_output(j)
                return during, chain.fw[j]
            if (j + 1) in self.plain:
                raise ScheduleError(f"a_{j + 1} is already stored")
            if op.kind is OpKind.FORWARD_NOGRAD:
                if j == 0:
                    raise ScheduleError("the input a_0 cannot be dropped (use Fc_0)")
                if j not in self.plain:
                    raise ScheduleError(f"a_{j} is not stored on its own, so it cannot be dropped")
                if j in self.tapes:
                    raise ScheduleError(
                        f"a_{j} cannot be dropped while the tape of stage {j} needs it"
                    )
            during = self.memory + chain.cw[j + 1] + chain.forward_nograd_tmp[j]
            self.plain.add(j + 1)
            self.memory += chain.cw[j + 1]
            if op.kind is OpKind.FORWARD_NOGRAD:
                self.plain.remove(j)
                self.memory -= chain.cw[j]
            return during, chain.fw[j]
        assert op.kind is OpKind.BACKWARD
        if j not in self.tapes:
            raise ScheduleError(f"the tape of stage {j} is not in memory")
        if (j + 1) not in self.grads:
            raise ScheduleError(f"the gradient d_{j + 1} is not in memory")
        if not self.has_activation(j):
            raise ScheduleError(f"its input a_{j} is not in memory")
        during = self.memory + chain.btmp[j]
        assert j not in self.outputs, "an output is dropped once its gradient exists"
        self.tapes.remove(j)
        self.grads.remove(j + 1)
        tape_left = chain.cbw[j + 1] - (0.0 if chain.output_saved[j] else chain.cw[j + 1])
        self.memory -= tape_left + chain.cw[j + 1]
        self._replace_activation_by_gradient(j)
        return during, chain.bw[j]

    def _replace_activation_by_gradient(self, j: int) -> None:
        """``d_j`` arrives: ``a_j`` is needed no more, wherever nothing else keeps it alive.

        A stored ``a_j`` goes, and so does the output held by the tape of stage ``j - 1`` unless
        that tape saved it for its own backward.
        """
        if j in self.plain:
            self.plain.remove(j)
            self.memory -= self.chain.cw[j]
        self.grads.add(j)
        self.memory += self.chain.cw[j]
        if (j - 1) in self.outputs:
            self._drop_output(j - 1)

    def _drop_output(self, stage: int) -> None:
        self.outputs.remove(stage)
        self.memory -= self.chain.cw[stage + 1]


def simulate(chain: Chain, schedule: Schedule) -> Simulation:
    """Run ``schedule`` on ``chain`` symbolically; ``ScheduleError`` if it is not valid."""
    if schedule.length != chain.length:
        raise ScheduleError(
            f"schedule is for {schedule.length} stages, chain has {chain.length} stages"
        )
    state = ChainState(chain)
    peak = state.memory
    makespan = 0.0
    trace: list[OpTrace] = []
    for position, op in enumerate(schedule):
        try:
            during, duration = state.apply(op)
        except ScheduleError as exc:
            raise ScheduleError(f"operation {position} ({op}): {exc}") from None
        peak = max(peak, during)
        makespan += duration
        trace.append(OpTrace(op, during, state.memory))
    if not state.finished:
        raise ScheduleError(
            "schedule ends before the backward pass reaches stage 0 "
            f"(gradients present: {sorted(state.grads)})"
        )
    leftovers = [f"tape of stage {j}" for j in sorted(state.tapes)]
    leftovers += [f"a_{j}" for j in sorted(state.plain)]
    if leftovers:
        raise ScheduleError(f"schedule leaves {', '.join(leftovers)} in memory, never used")
    return Simulation(makespan=makespan, peak=peak, trace=tuple(trace))
