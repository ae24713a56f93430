"""Profiles at several sizes, the fitted memory model, and its check against measured steps."""

from __future__ import annotations

import pytest

from checkpointing.execution.models import build_model
from checkpointing.execution.profile import ProfileConfig
from checkpointing.execution.profile_sizes import SamplingError, fit_model, profile_samples
from checkpointing.planning.memory_model import MemoryModel
from edgefleet.harness.sampling import check_memory_model, summarise

MODEL = "small_cnn"
CLASSES = 10
BATCH_SIZES = (1, 2, 4)
IMAGE_SIZES = (32, 48)
QUICK = ProfileConfig(repeats=1, warmup=0)


@pytest.fixture(scope="module")
def memory_model() -> MemoryModel:
    return fit_model(MODEL, BATCH_SIZES, IMAGE_SIZES, num_classes=CLASSES, config=QUICK)


def test_profiles_cover_every_size_with_the_same_stages() -> None:
    profiles = profile_samples(MODEL, (1, 3), IMAGE_SIZES, num_classes=CLASSES, config=QUICK)

    shapes = [profile.input_shape for profile in profiles]
    assert shapes == [(1, 3, 32, 32), (3, 3, 32, 32), (1, 3, 48, 48), (3, 3, 48, 48)]
    assert len({profile.stage_names for profile in profiles}) == 1
    assert all(p.chain.cw[0] == 4 * 3 * p.input_shape[-1] ** 2 * p.batch_size for p in profiles)


def test_fitted_model_describes_the_network(memory_model: MemoryModel) -> None:
    network = build_model(MODEL, CLASSES)
    parameter_bytes = sum(p.numel() * p.element_size() for p in network.parameters())

    assert memory_model.model == MODEL
    assert memory_model.num_classes == CLASSES
    assert memory_model.samples == tuple((b, s) for s in IMAGE_SIZES for b in BATCH_SIZES)
    assert memory_model.parameter_bytes == parameter_bytes
    assert memory_model.buffer_bytes > 0
    assert memory_model.predict(16, 32).cw[0] == 16 * 3 * 32 * 32 * 4


def test_predictions_at_unseen_sizes_match_measured_steps(memory_model: MemoryModel) -> None:
    cases = check_memory_model(memory_model, (16,), (32, 40), time_repeats=1)

    assert [(c.image_size, c.batch_size, c.strategy) for c in cases] == [
        (32, 16, "store_all"),
        (32, 16, "optimal"),
        (40, 16, "store_all"),
        (40, 16, "optimal"),
    ]
    for case in cases:
        assert abs(case.error) <= 0.05, case
        assert case.measured_time_s > 0
    store_all, optimal = cases[0], cases[1]
    assert optimal.budget_bytes is not None
    assert optimal.predicted_peak_bytes <= optimal.budget_bytes < store_all.measured_peak_bytes
    assert summarise(cases)["max_abs_err"] <= 0.05


@pytest.mark.parametrize(
    ("batch_sizes", "image_sizes", "message"),
    [
        ((0, 2), IMAGE_SIZES, "batch size"),
        (BATCH_SIZES, (32, 4), "image size"),
        ((), (32,), "at least one"),
    ],
)
def test_bad_sizes_are_rejected(
    batch_sizes: tuple[int, ...], image_sizes: tuple[int, ...], message: str
) -> None:
    with pytest.raises(SamplingError, match=message):
        profile_samples(MODEL, batch_sizes, image_sizes, num_classes=CLASSES, config=QUICK)
