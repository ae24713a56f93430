"""The memory model's fit and predictions, on synthetic chains whose coefficients are known."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from checkpointing.planning.chain import Chain
from checkpointing.planning.memory_model import (
    MEMORY_MODEL_VERSION,
    QUANTITIES,
    MemoryModel,
    MemoryModelError,
    fit_memory_model,
)

STAGES = ("conv", "relu", "head")
SAVES_OUTPUT = (False, True, True)
SAMPLES = ((1, 32), (2, 32), (4, 32), (1, 48), (2, 48), (4, 48))

# (intercept, per_sample, per_sample_pixel) per entry; the loss is the last entry where it has one.
TRUE = {
    "fw": ((1e-4, 2e-5, 3e-8), (5e-5, 1e-5, 1e-8), (2e-4, 4e-5, 0.0)),
    "bw": ((2e-4, 4e-5, 6e-8), (1e-4, 2e-5, 2e-8), (3e-4, 5e-5, 0.0), (1e-5, 1e-6, 0.0)),
    "cw": ((0, 0, 12), (0, 0, 64), (0, 0, 64), (0, 40, 0)),
    "cbw": ((0, 0, 0), (0, 0, 64), (0, 0, 64), (0, 40, 0)),
    "ftmp": ((1728, 0, 0), (0, 0, 0), (4096, 16, 0)),
    "ftmp_nograd": ((1728, 0, 0), (0, 0, 64), (4096, 16, 0)),
    "btmp": ((1728, 0, 12), (0, 0, 64), (4096, 40, 64), (0, 44, 0)),
}


def _value(triple: tuple[float, float, float], batch: int, size: int) -> float:
    intercept, per_sample, per_sample_pixel = triple
    return intercept + per_sample * batch + per_sample_pixel * batch * size**2


def _chain(batch: int, size: int, saves_output: tuple[bool, ...] = SAVES_OUTPUT) -> Chain:
    values = {q: tuple(_value(t, batch, size) for t in TRUE[q]) for q in QUANTITIES}
    return Chain(**values, saves_output=saves_output)


def _fitted(samples: tuple[tuple[int, int], ...] = SAMPLES) -> MemoryModel:
    return fit_memory_model(
        "synthetic",
        [(batch, size, _chain(batch, size)) for batch, size in samples],
        STAGES,
        parameter_bytes=4096,
        buffer_bytes=256,
    )


def test_fit_recovers_the_generating_coefficients() -> None:
    model = _fitted()

    for quantity in QUANTITIES:
        for fitted, true in zip(model.coefficients[quantity], TRUE[quantity], strict=True):
            assert fitted == pytest.approx(true, rel=1e-6, abs=1e-6), quantity


def test_prediction_at_an_unseen_size_is_the_generating_chain() -> None:
    model = _fitted()

    predicted = model.predict(16, 224)

    expected = _chain(16, 224)
    for quantity in ("cw", "cbw", "ftmp", "btmp"):
        assert getattr(predicted, quantity) == getattr(expected, quantity), quantity
    assert predicted.forward_nograd_tmp == expected.forward_nograd_tmp
    assert predicted.fw == pytest.approx(expected.fw, rel=1e-6)
    assert predicted.bw == pytest.approx(expected.bw, rel=1e-6)
    assert predicted.output_saved == SAVES_OUTPUT


def test_fit_on_the_minimum_of_samples_is_exact() -> None:
    model = _fitted(((1, 32), (2, 32), (1, 48)))

    assert model.predict(8, 64).cw == _chain(8, 64).cw


def test_sizes_are_rounded_up_and_never_negative() -> None:
    coefficients = {q: tuple((0.0, 0.0, 0.0) for _ in TRUE[q]) for q in QUANTITIES}
    coefficients["cw"] = ((0.0, 0.0, 12.0), (0.25, 0.0, 0.5), (-1000.0, 1.0, 0.0), (0, 0, 0))
    coefficients["cbw"] = coefficients["cw"]
    coefficients["fw"] = ((-1.0, 0.0, 0.0), (0.5, 0.0, 0.0), (0.0, 0.0, 0.0))
    model = MemoryModel("m", STAGES, SAVES_OUTPUT, coefficients, SAMPLES, 0, 0)

    chain = model.predict(1, 3)

    assert chain.cw == (108.0, 5.0, 0.0, 0.0)
    assert chain.fw == (0.0, 0.5, 0.0)


def test_a_tape_that_releases_its_output_still_holds_it_after_rounding() -> None:
    coefficients = {q: tuple((0.0, 0.0, 0.0) for _ in TRUE[q]) for q in QUANTITIES}
    coefficients["cw"] = ((0, 0, 12), (0.0, 0.0, 64.0), (0, 0, 1), (0, 0, 1))
    # Fitted a little under its output, as noise would make it.
    coefficients["cbw"] = ((0, 0, 0), (-3.0, 0.0, 63.9999), (0, 0, 1), (0, 0, 1))
    model = MemoryModel("m", STAGES, SAVES_OUTPUT, coefficients, SAMPLES, 0, 0)

    chain = model.predict(4, 32)

    assert chain.cbw[1] == chain.cw[1] == 4 * 64 * 32**2


def test_json_round_trip_keeps_every_prediction() -> None:
    model = _fitted()

    restored = MemoryModel.from_dict(json.loads(json.dumps(model.to_dict())))

    assert restored == model
    assert restored.predict(12, 100) == model.predict(12, 100)
    assert restored.to_dict()["version"] == MEMORY_MODEL_VERSION


def test_another_version_is_rejected() -> None:
    data = _fitted().to_dict()
    data["version"] = MEMORY_MODEL_VERSION + 1

    with pytest.raises(MemoryModelError, match="version"):
        MemoryModel.from_dict(data)


def test_malformed_coefficients_are_rejected_by_name() -> None:
    data = _fitted().to_dict()
    coefficients = data["coefficients"]
    assert isinstance(coefficients, dict)
    coefficients["btmp"] = coefficients["btmp"][:-1]

    with pytest.raises(MemoryModelError, match="'btmp' needs 4 triples"):
        MemoryModel.from_dict(data)


def test_samples_with_different_stage_counts_are_rejected() -> None:
    short = Chain.homogeneous(2)
    samples = [(b, s, _chain(b, s)) for b, s in SAMPLES[:-1]]

    with pytest.raises(MemoryModelError, match="batch 4, image size 48 has 2 stages"):
        fit_memory_model("m", [*samples, (4, 48, short)], STAGES, 0, 0)


def test_samples_whose_tapes_differ_are_rejected_naming_the_stage() -> None:
    samples = [(b, s, _chain(b, s)) for b, s in SAMPLES[:-1]]
    odd = _chain(4, 48, saves_output=(False, False, True))

    with pytest.raises(MemoryModelError, match=r"stage 1 \(relu\)"):
        fit_memory_model("m", [*samples, (4, 48, odd)], STAGES, 0, 0)


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (((1, 32), (2, 32), (4, 32)), "2 image sizes"),
        (((2, 32), (2, 48)), "2 batch sizes"),
        (((1, 32), (2, 48)), "do not determine"),
    ],
)
def test_samples_that_cannot_determine_the_fit_are_rejected(
    samples: tuple[tuple[int, int], ...], message: str
) -> None:
    with pytest.raises(MemoryModelError, match=message):
        _fitted(samples)


def test_memory_model_imports_no_torch() -> None:
    code = (
        "import sys, checkpointing.planning.memory_model;"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert completed.returncode == 0, completed.stderr
