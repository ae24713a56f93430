import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointing.planning.chain import Chain
from checkpointing.planning.simulate import simulate
from checkpointing.planning.solvers import persistent_tables
from checkpointing.planning.solvers.baselines import store_all
from checkpointing.planning.solvers.persistent import (
    _extended,
    discretise,
    min_budget,
    solve_persistent,
)
from tests.unit.checkpointing.exhaustive import best_makespan
from tests.unit.checkpointing.strategies import integer_chains, real_chains


@settings(max_examples=60, deadline=None)
@given(chain=integer_chains(), budget=st.integers(1, 30))
def test_dp_matches_exhaustive_search(chain: Chain, budget: int) -> None:
    expected = best_makespan(chain, budget)

    solution = solve_persistent(chain, budget, slots=100)

    if math.isinf(expected):
        assert not solution.feasible
    else:
        assert solution.feasible
        assert solution.makespan == expected
        assert solution.peak <= budget


@settings(max_examples=40, deadline=None)
@given(chain=integer_chains())
def test_min_budget_is_the_exact_threshold(chain: Chain) -> None:
    threshold = min_budget(chain)

    assert solve_persistent(chain, max(threshold, 1), slots=1000).feasible
    if threshold > 1:
        assert not solve_persistent(chain, threshold - 1, slots=1000).feasible
    assert math.isfinite(best_makespan(chain, threshold))
    assert math.isinf(best_makespan(chain, threshold - 1))


@settings(max_examples=40, deadline=None)
@given(chain=real_chains(), fraction=st.floats(0.05, 1.2))
def test_real_valued_solutions_simulate_within_budget(chain: Chain, fraction: float) -> None:
    budget = fraction * simulate(chain, store_all(chain.length)).peak + 1.0

    solution = solve_persistent(chain, budget, slots=200)

    if solution.feasible:
        assert solution.schedule is not None
        assert simulate(chain, solution.schedule).peak <= budget
        assert solution.peak <= budget
    else:
        assert budget < min_budget(chain) * (1 + 1e-9) or solution.slots == 200


@settings(max_examples=25, deadline=None)
@given(chain=real_chains(max_length=10), slots=st.integers(1, 120))
def test_compiled_tables_equal_numpy_twin(chain: Chain, slots: int) -> None:
    discrete = discretise(chain, 3e8, slots)
    arrays = (
        discrete.fw,
        discrete.bw,
        discrete.cw,
        discrete.cbw,
        discrete.ftmp,
        discrete.fntmp,
        discrete.bwd,
    )

    opt_c, what_c = persistent_tables.tables_compiled(*arrays, slots)
    opt_n, what_n = persistent_tables.tables_numpy(*arrays, slots)

    assert np.array_equal(opt_c, opt_n)
    assert np.array_equal(what_c, what_n)


@settings(max_examples=25, deadline=None)
@given(chain=real_chains(max_length=10))
def test_compiled_min_peak_equals_python(chain: Chain) -> None:
    _, _, cw, cbw, ftmp, fntmp, bwd = _extended(chain)

    compiled = persistent_tables.min_peak_compiled(cw, cbw, ftmp, fntmp, bwd)
    plain = persistent_tables.min_peak_python(cw, cbw, ftmp, fntmp, bwd)

    assert np.array_equal(compiled, plain)


def test_enough_memory_gives_store_all_time() -> None:
    chain = Chain(
        fw=[1, 2, 3], bw=[2, 4, 6, 1], cw=[1, 2, 3, 4], cbw=[0, 5, 6, 7], ftmp=[0] * 3, btmp=[0] * 4
    )
    store = simulate(chain, store_all(3))

    solution = solve_persistent(chain, store.peak, slots=1000)

    assert solution.makespan == store.makespan


def test_zero_sizes_do_not_break_the_solver() -> None:
    chain = Chain(fw=[1, 1], bw=[1, 1, 1], cw=[0, 0, 0], cbw=[0, 0, 0], ftmp=[0, 0], btmp=[0] * 3)

    solution = solve_persistent(chain, 1, slots=10)

    assert solution.feasible
    assert solution.peak == 0
    assert solution.makespan == 5


def test_infeasible_reports_smallest_budget() -> None:
    chain = Chain.homogeneous(5)

    solution = solve_persistent(chain, 2, slots=10)

    assert not solution.feasible
    assert solution.min_budget == min_budget(chain)
    assert solve_persistent(chain, solution.min_budget, slots=100).feasible


def test_more_memory_never_slower() -> None:
    chain = Chain(
        fw=[3, 1, 4, 1, 5, 9],
        bw=[2, 6, 5, 3, 5, 8, 9],
        cw=[7, 9, 3, 2, 3, 8, 4],
        cbw=[0, 12, 6, 5, 9, 14, 6],
        ftmp=[1, 0, 2, 0, 1, 0],
        btmp=[0, 2, 1, 3, 0, 1, 2],
    )
    makespans = [
        solve_persistent(chain, budget, slots=200).makespan for budget in range(20, 120, 5)
    ]

    assert all(b <= a for a, b in itertools.pairwise(makespans))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_bad_budget_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="budget"):
        solve_persistent(Chain.homogeneous(2), bad)
