import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from orchestrator.aggregation import (
    AggregationError,
    AggregationRule,
    AlreadyFolded,
    RunningSum,
    SumClosed,
    Update,
    aggregate,
    rules,
)

RNG = np.random.default_rng(0)


def _model() -> dict[str, np.ndarray]:
    return {
        "conv.weight": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }


def _write(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    save_file(tensors, str(path))
    return path


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return _write(tmp_path / "global.safetensors", _model())


def _deltas(tmp_path: Path, count: int) -> list[dict[str, np.ndarray]]:
    deltas = []
    for i in range(count):
        delta = {
            "conv.weight": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "bn.num_batches_tracked": np.array(1, dtype=np.int64),
        }
        _write(tmp_path / f"u{i}.safetensors", delta)
        deltas.append(delta)
    return deltas


def test_fedavg_weights_by_sample_count(tmp_path: Path, model_path: Path) -> None:
    deltas = _deltas(tmp_path, 3)
    counts = [10, 30, 60]
    updates = [Update(tmp_path / f"u{i}.safetensors", n) for i, n in enumerate(counts)]

    accepted, rejected = aggregate(model_path, updates, AggregationRule.FEDAVG, tmp_path / "out")

    result = load_file(str(tmp_path / "out"))
    base = load_file(str(model_path))
    expected = base["conv.weight"].astype(np.float64) + sum(
        d["conv.weight"].astype(np.float64) * n / 100 for d, n in zip(deltas, counts, strict=True)
    )
    assert len(accepted) == 3
    assert not rejected
    np.testing.assert_allclose(result["conv.weight"], expected.astype(np.float32), rtol=1e-6)
    assert result["bn.num_batches_tracked"] == base["bn.num_batches_tracked"]


def test_median_and_trimmed_mean_resist_an_outlier(tmp_path: Path, model_path: Path) -> None:
    deltas = _deltas(tmp_path, 4)
    poisoned = {k: v.copy() for k, v in deltas[0].items()}
    poisoned["conv.weight"] = np.full((4, 3, 3, 3), 1e6, dtype=np.float32)
    _write(tmp_path / "bad.safetensors", poisoned)
    updates = [Update(tmp_path / f"u{i}.safetensors", 1) for i in range(4)]
    updates.append(Update(tmp_path / "bad.safetensors", 1))

    aggregate(model_path, updates, AggregationRule.MEDIAN, tmp_path / "median")
    aggregate(model_path, updates, AggregationRule.TRIMMED_MEAN, tmp_path / "trim", 0.2)
    aggregate(model_path, updates, AggregationRule.FEDAVG, tmp_path / "mean")

    base = load_file(str(model_path))["conv.weight"]
    for name in ("median", "trim"):
        moved = load_file(str(tmp_path / name))["conv.weight"] - base
        assert np.abs(moved).max() < 10
    assert np.abs(load_file(str(tmp_path / "mean"))["conv.weight"] - base).min() > 1e5


def test_bad_updates_are_rejected_with_a_reason(tmp_path: Path, model_path: Path) -> None:
    _deltas(tmp_path, 1)
    wrong_shape = _write(
        tmp_path / "shape.safetensors",
        {"conv.weight": np.zeros((2, 3), np.float32), "bn.num_batches_tracked": np.array(0)},
    )
    nan = _write(
        tmp_path / "nan.safetensors",
        {
            "conv.weight": np.full((4, 3, 3, 3), np.nan, np.float32),
            "bn.num_batches_tracked": np.array(0),
        },
    )
    missing = _write(tmp_path / "missing.safetensors", {"conv.weight": np.zeros((4, 3, 3, 3))})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors")
    updates = [
        Update(tmp_path / "u0.safetensors", 5),
        Update(wrong_shape, 5),
        Update(nan, 5),
        Update(missing, 5),
        Update(garbage, 5),
        Update(tmp_path / "u0.safetensors", 0),
    ]

    accepted, rejected = aggregate(model_path, updates, AggregationRule.FEDAVG, tmp_path / "o")

    reasons = [r.reason for r in rejected]
    assert len(accepted) == 1
    assert "is F32[2, 3], expected F32[4, 3, 3, 3]" in reasons[0]
    assert "non-finite" in reasons[1]
    assert "missing ['bn.num_batches_tracked']" in reasons[2]
    assert "not a readable safetensors file" in reasons[3]
    assert "sample count" in reasons[4]


def test_nothing_valid_is_an_error(tmp_path: Path, model_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"x")

    with pytest.raises(AggregationError, match="no valid update"):
        aggregate(model_path, [Update(garbage, 1)], AggregationRule.FEDAVG, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_running_sum_is_fedavg_and_a_bad_update_leaves_it_untouched(
    tmp_path: Path, model_path: Path
) -> None:
    deltas = _deltas(tmp_path, 3)
    half_bad = {k: v.copy() for k, v in deltas[0].items()}
    half_bad["conv.weight"][-1, -1, -1, -1] = np.inf
    bad = _write(tmp_path / "bad.safetensors", half_bad)
    updates = [Update(tmp_path / f"u{i}.safetensors", n) for i, n in enumerate((3, 5, 8))]
    running = RunningSum(model_path)

    verdicts = [running.add("u0", updates[0]), running.add("bad", Update(bad, 4))]
    verdicts += [running.add(f"u{i}", updates[i]) for i in (1, 2)]
    running.write(tmp_path / "running")
    aggregate(model_path, updates, AggregationRule.FEDAVG, tmp_path / "batch")

    assert [v is None for v in verdicts] == [True, False, True, True]
    assert running.keys == {"u0", "u1", "u2"} and running.total_samples == 16
    folded, batch = load_file(str(tmp_path / "running")), load_file(str(tmp_path / "batch"))
    np.testing.assert_allclose(folded["conv.weight"], batch["conv.weight"], rtol=1e-6)


def test_folds_in_parallel_lanes_sum_to_fedavg_and_a_taken_back_one_leaves_no_trace(
    tmp_path: Path, model_path: Path
) -> None:
    _deltas(tmp_path, 6)
    updates = [Update(tmp_path / f"u{i}.safetensors", i + 1) for i in range(6)]
    running = RunningSum(model_path, lanes=3)
    start = threading.Barrier(6)

    def upload(index: int) -> None:
        start.wait()
        assert running.fold(f"u{index}", updates[index]) is None
        # The last one is not recorded (say, the round closed meanwhile): taken back.
        running.settle(f"u{index}", keep=index != 5)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    running.write(tmp_path / "running")
    running.write(tmp_path / "again")
    aggregate(model_path, updates[:5], AggregationRule.FEDAVG, tmp_path / "batch")

    assert running.keys == {f"u{i}" for i in range(5)} and running.total_samples == 15
    folded, batch = load_file(str(tmp_path / "running")), load_file(str(tmp_path / "batch"))
    again = load_file(str(tmp_path / "again"))
    np.testing.assert_allclose(folded["conv.weight"], batch["conv.weight"], rtol=1e-6)
    np.testing.assert_array_equal(again["conv.weight"], folded["conv.weight"])


def test_writing_waits_for_a_pending_fold_and_closes_the_sum(
    tmp_path: Path, model_path: Path
) -> None:
    _deltas(tmp_path, 2)
    running = RunningSum(model_path)
    running.add("u0", Update(tmp_path / "u0.safetensors", 2))
    running.fold("u1", Update(tmp_path / "u1.safetensors", 3))
    writer = threading.Thread(target=running.write, args=(tmp_path / "out",))

    writer.start()
    writer.join(timeout=0.2)
    waited = writer.is_alive()
    running.settle("u1", keep=False)
    writer.join(timeout=10)

    assert waited and not writer.is_alive()
    assert running.keys == {"u0"} and (tmp_path / "out").exists()
    with pytest.raises(SumClosed):
        running.fold("u2", Update(tmp_path / "u1.safetensors", 3))


def test_a_key_folds_once(tmp_path: Path, model_path: Path) -> None:
    _deltas(tmp_path, 1)
    update = Update(tmp_path / "u0.safetensors", 2)
    running = RunningSum(model_path)
    running.fold("u0", update)

    with pytest.raises(AlreadyFolded):
        running.fold("u0", update)
    running.settle("u0", keep=True)
    with pytest.raises(AlreadyFolded):
        running.fold("u0", update)


def test_coordinate_rules_read_block_by_block_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"fc.weight": RNG.standard_normal((50, 7)).astype(np.float32)}
    model_path = _write(tmp_path / "global.safetensors", base)
    stacked = RNG.standard_normal((5, 50, 7)).astype(np.float32)
    updates = [
        Update(_write(tmp_path / f"u{i}.safetensors", {"fc.weight": stacked[i]}), 1)
        for i in range(5)
    ]
    # Blocks of 3 rows of every update: the tensor is read in 17 pieces.
    monkeypatch.setattr(rules, "_BLOCK_BYTES", 5 * 7 * 8 * 3)

    aggregate(model_path, updates, AggregationRule.MEDIAN, tmp_path / "median")
    aggregate(model_path, updates, AggregationRule.TRIMMED_MEAN, tmp_path / "trim", 0.2)

    wide = stacked.astype(np.float64)
    median = base["fc.weight"] + np.median(wide, axis=0)
    trimmed = base["fc.weight"] + np.sort(wide, axis=0)[1:4].mean(axis=0)
    got_median = load_file(str(tmp_path / "median"))["fc.weight"]
    got_trimmed = load_file(str(tmp_path / "trim"))["fc.weight"]
    np.testing.assert_allclose(got_median, median.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(got_trimmed, trimmed.astype(np.float32), rtol=1e-6)
