import pytest

from checkpointing.planning.chain import Chain
from checkpointing.planning.simulate import simulate
from checkpointing.planning.solvers.baselines import (
    checkpoint_sequential,
    checkpoint_sequential_memory,
    checkpoint_sequential_segments,
    recompute_all,
    store_all,
)


def _torch_segments(length: int, segments: int) -> list[tuple[int, int]]:
    """How torch.utils.checkpoint.checkpoint_sequential walks its functions (PyTorch 2.x)."""
    size = length // segments
    bounds = []
    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        bounds.append((start, end))
    bounds.append((end + 1, length - 1))
    return bounds


@pytest.mark.parametrize("length", [1, 2, 5, 8, 13])
def test_segments_cut_like_pytorch(length: int) -> None:
    for segments in range(1, length + 1):
        assert checkpoint_sequential_segments(length, segments) == _torch_segments(length, segments)


@pytest.mark.parametrize("length", [1, 3, 6, 10, 17])
def test_checkpoint_sequential_memory_follows_seed_formula(length: int) -> None:
    chain = Chain.homogeneous(length)

    for segments in range(1, length + 1):
        peak = simulate(chain, checkpoint_sequential(length, segments)).peak
        # The formula counts stored activations; the simulator adds the input and one gradient.
        assert peak == checkpoint_sequential_memory(length, segments) + 2


def test_store_all_and_recompute_all_extremes() -> None:
    length = 6
    chain = Chain.homogeneous(length, uf=1.0, ub=2.0)

    store = simulate(chain, store_all(length))
    recompute = simulate(chain, recompute_all(length))

    assert store.peak == length + 2
    assert store.makespan == length * 1.0 + (length + 1) * 2.0
    assert recompute.peak == 4  # input, one recomputed activation, a tape and a gradient
    advances = length * (length + 1) / 2
    assert recompute.makespan == (advances + length) * 1.0 + (length + 1) * 2.0


def test_segments_validated() -> None:
    with pytest.raises(ValueError, match="segments"):
        checkpoint_sequential(4, 5)
    with pytest.raises(ValueError, match="stage"):
        store_all(0)
