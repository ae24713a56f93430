"""Capped exponential backoff with jitter."""

from __future__ import annotations

import random

import pytest

from node_agent.backoff import Backoff


def test_waits_double_up_to_the_cap_each_between_half_and_all_of_it() -> None:
    backoff = Backoff(base_s=0.5, cap_s=4.0, rng=random.Random(0))

    waits = [backoff.next_wait_s() for _ in range(6)]

    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert len(set(waits)) == len(waits)


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(base_s=1.0, cap_s=30.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_wait_s()

    backoff.reset()

    assert 0.5 <= backoff.next_wait_s() <= 1.0


@pytest.mark.parametrize(("base_s", "cap_s"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_a_base_outside_zero_to_the_cap_is_refused(base_s: float, cap_s: float) -> None:
    with pytest.raises(ValueError, match="0 < base_s <= cap_s"):
        Backoff(base_s=base_s, cap_s=cap_s)
