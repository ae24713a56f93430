import math

import pytest

from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import OpKind
from checkpointing.planning.simulate import simulate
from checkpointing.planning.solvers.revolve import closed_form_forward_steps, revolve, revolve_table


def _seed_opt(length: int, c: int, uf: float, ub: float) -> float:
    """The seed's recurrence, written out literally."""
    if length == 0:
        return ub
    if c == 1:
        return length * (length + 1) / 2 * uf + (length + 1) * ub
    if length == 1:
        return uf + 2 * ub
    return min(
        i * uf + _seed_opt(length - i, c - 1, uf, ub) + _seed_opt(i - 1, c, uf, ub)
        for i in range(1, length)
    )


@pytest.mark.parametrize(("uf", "ub"), [(1.0, 1.0), (1.0, 0.0), (2.0, 3.0)])
def test_table_reproduces_seed_recurrence(uf: float, ub: float) -> None:
    table = revolve_table(12, 4, uf, ub)

    for length in range(13):
        for c in range(1, 5):
            assert table[length, c] == _seed_opt(length, c, uf, ub)
        assert math.isinf(table[length, 0])


def test_forward_count_matches_griewank_walther_closed_form() -> None:
    table = revolve_table(60, 8, uf=1.0, ub=0.0)

    for length in range(61):
        for c in range(1, 9):
            assert table[length, c] == closed_form_forward_steps(length, c)


@pytest.mark.parametrize(("steps", "checkpoints"), [(1, 1), (5, 2), (10, 3), (17, 4), (9, 9)])
def test_schedule_costs_what_the_table_says(steps: int, checkpoints: int) -> None:
    chain = Chain.homogeneous(steps, uf=1.0, ub=0.0)

    solution = revolve(steps, checkpoints, uf=1.0, ub=0.0)
    simulation = simulate(chain, solution.schedule)

    advances = solution.schedule.count(OpKind.FORWARD_CHECK) + solution.schedule.count(
        OpKind.FORWARD_NOGRAD
    )
    assert advances == solution.cost == closed_form_forward_steps(steps, checkpoints)
    stored = simulation.peak
    # c checkpoints (the input's included), one activation being advanced, a tape, a gradient.
    assert stored <= checkpoints + 3


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        revolve(3, 0)
    with pytest.raises(ValueError, match="steps"):
        revolve(-1, 2)
    with pytest.raises(ValueError, match="uf"):
        revolve(3, 2, uf=-1.0)
