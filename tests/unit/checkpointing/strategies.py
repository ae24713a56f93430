"""Hypothesis strategies for random chains."""

from __future__ import annotations

from hypothesis import strategies as st

from checkpointing.planning.chain import Chain


@st.composite
def integer_chains(draw: st.DrawFn, max_length: int = 4, max_size: int = 5) -> Chain:
    """Small chains in whole units, zero sizes included (they must not break anything)."""
    length = draw(st.integers(1, max_length))
    times = st.integers(0, 6)
    sizes = st.integers(0, max_size)
    cw = draw(st.lists(sizes, min_size=length + 1, max_size=length + 1))
    cbw = draw(st.lists(st.integers(0, 2 * max_size), min_size=length + 1, max_size=length + 1))
    return Chain(
        fw=draw(st.lists(times, min_size=length, max_size=length)),
        bw=draw(st.lists(times, min_size=length + 1, max_size=length + 1)),
        cw=cw,
        cbw=cbw,
        ftmp=draw(st.lists(st.integers(0, 2), min_size=length, max_size=length)),
        ftmp_nograd=draw(st.lists(st.integers(0, 2), min_size=length, max_size=length)),
        btmp=draw(st.lists(st.integers(0, 3), min_size=length + 1, max_size=length + 1)),
        saves_output=_flags(draw, cw, cbw),
    )


def _flags(draw: st.DrawFn, cw: list[float], cbw: list[float]) -> list[bool]:
    """Random ``saves_output``; a tape smaller than its output must count as saving it."""
    flags = draw(st.lists(st.booleans(), min_size=len(cw) - 1, max_size=len(cw) - 1))
    return [flag or cbw[i + 1] < cw[i + 1] for i, flag in enumerate(flags)]


@st.composite
def real_chains(draw: st.DrawFn, max_length: int = 12) -> Chain:
    """Chains in bytes and seconds, as a profiler would give them."""
    length = draw(st.integers(1, max_length))
    time = st.floats(1e-4, 1.0)
    size = st.floats(0, 5e7)
    cw = draw(st.lists(size, min_size=length + 1, max_size=length + 1))
    cbw = draw(st.lists(size, min_size=length + 1, max_size=length + 1))
    return Chain(
        fw=draw(st.lists(time, min_size=length, max_size=length)),
        bw=draw(st.lists(time, min_size=length + 1, max_size=length + 1)),
        cw=cw,
        cbw=cbw,
        saves_output=_flags(draw, cw, cbw),
        ftmp=draw(st.lists(size, min_size=length, max_size=length)),
        ftmp_nograd=draw(st.lists(size, min_size=length, max_size=length)),
        btmp=draw(st.lists(size, min_size=length + 1, max_size=length + 1)),
    )
