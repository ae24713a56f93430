"""Weights on a board: files, bytes, deltas, and a clear error for what does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from node_agent.weights import (
    WeightsError,
    delta,
    from_bytes,
    load_into,
    read_state_dict,
    to_bytes,
    weights_file,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_a_state_dict_round_trips_through_bytes() -> None:
    state = _model().state_dict()

    again = from_bytes(to_bytes(state))

    assert again.keys() == state.keys()
    for name, tensor in state.items():
        torch.testing.assert_close(again[name], tensor, rtol=0, atol=0)


def test_a_delta_subtracts_floats_and_keeps_counters() -> None:
    before = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    after = {"w": torch.tensor([1.5, 1.0]), "n": torch.tensor(5)}

    changed = delta(after, before)

    torch.testing.assert_close(changed["w"], torch.tensor([0.5, -1.0]))
    assert int(changed["n"]) == 5


def test_weights_that_do_not_fit_name_the_problem() -> None:
    state = _model().state_dict()
    state.pop("0.bias")

    with pytest.raises(WeightsError, match="the teacher's weights do not fit the model"):
        load_into(_model(), state, "the teacher's weights")


def test_the_file_is_found_by_model_name_and_a_torch_file_is_read_without_code(
    tmp_path: Path,
) -> None:
    torch.save({"state_dict": _model().state_dict()}, tmp_path / "student.pth")

    path = weights_file(tmp_path, "student")
    state = read_state_dict(path)

    assert path.name == "student.pth"
    load_into(_model(), state, "weights")
    with pytest.raises(WeightsError, match="no weights for teacher"):
        weights_file(tmp_path, "teacher")


def test_bytes_that_are_not_safetensors_are_refused() -> None:
    with pytest.raises(WeightsError, match="not a safetensors file"):
        from_bytes(b"not a tensor file")
