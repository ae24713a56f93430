"""Memory models from profiles and per-board plans (pure: no torch, no server)."""

from __future__ import annotations

import json

import pytest

from checkpointing.planning.chain import Chain
from orchestrator.job_spec import JobSpec
from orchestrator.planning import (
    MemoryModelPayload,
    ProfileRejected,
    ProfileSample,
    StoredPlan,
    budget_bytes,
    fit_profiles,
    plan_node,
    planning_budget_bytes,
    profile_image_sizes,
)
from orchestrator.storage.records import Hardware

MIB = 1 << 20
NAMES = ("a", "b")


def _sample(batch: int, size: int) -> ProfileSample:
    pixels = batch * size * size
    cw = (12 * pixels, 64 * pixels, 40 * batch)
    return ProfileSample(
        batch,
        size,
        NAMES,
        Chain(
            fw=(1e-6 * pixels,) * 2,
            bw=(2e-6 * pixels,) * 2 + (1e-6,),
            cw=cw,
            cbw=(0, 2 * cw[1], 2 * cw[2]),
            ftmp=(cw[1] / 2, cw[2]),
            btmp=(cw[1], cw[2], 64),
        ),
    )


def _payload(overhead_fraction: float | None = 0.1) -> MemoryModelPayload:
    wanted = [(b, s) for b in (1, 2) for s in (16, 32)]
    model = fit_profiles("tiny", [_sample(b, s) for b, s in wanted], MIB, 0, 10, wanted)
    return MemoryModelPayload(model, overhead_fraction, 0)


def _hardware(budget: int) -> Hardware:
    return Hardware(
        ram_bytes=1 << 30,
        num_cores=4,
        cpu_model="a53",
        arch="aarch64",
        accelerator=None,
        torch_version="2.14.1",
        runtime_baseline_bytes=100 * MIB,
        memory_budget_bytes=budget,
    )


@pytest.mark.parametrize(("size", "expected"), [(224, (112, 224)), (32, (16, 32)), (16, (16, 32))])
def test_profiles_pin_the_job_size_and_a_smaller_one(size: int, expected: tuple[int, int]) -> None:
    assert profile_image_sizes(size) == expected


def test_the_fit_predicts_the_profiled_chain_exactly() -> None:
    payload = _payload()

    predicted = payload.memory_model.predict(2, 32)

    assert predicted.cw == _sample(2, 32).chain.cw
    assert MemoryModelPayload.from_json(payload.to_json()) == payload


def test_missing_profiles_are_named() -> None:
    wanted = [(1, 16), (2, 32)]

    with pytest.raises(ProfileRejected, match=r"missing .* \[\(2, 32\)\]"):
        fit_profiles("tiny", [_sample(1, 16)], MIB, 0, 10, wanted)


def test_a_board_states_its_budget_or_gets_a_share_of_its_ram() -> None:
    assert budget_bytes(_hardware(300 * MIB), 0.5) == 300 * MIB
    assert budget_bytes(_hardware(0), 0.5) == 512 * MIB


def test_each_out_of_memory_report_shrinks_only_the_training_share() -> None:
    assert planning_budget_bytes(500, 100, 0) == 500
    assert planning_budget_bytes(500, 100, 1) == 100 + 320
    assert planning_budget_bytes(500, 100, 2) == 100 + 256


def test_a_plan_fits_the_budget_and_a_too_small_board_gets_its_shortfall() -> None:
    spec = JobSpec(student="tiny", image_size=32, rounds=1, local_steps=1, learning_rate=0.1)

    roomy = plan_node(spec, _hardware(400 * MIB), _payload(), None, ram_fraction=0.85)
    shrunk = plan_node(spec, _hardware(400 * MIB), _payload(), None, ram_fraction=0.85, oom_count=3)
    tiny = plan_node(spec, _hardware(101 * MIB), _payload(), None, ram_fraction=0.85)

    assert roomy.fits and roomy.plan is not None
    assert roomy.plan.predicted_peak_bytes <= roomy.budget_bytes == 400 * MIB
    assert shrunk.plan is not None and shrunk.plan.batch_size < roomy.plan.batch_size
    assert not tiny.fits and tiny.shortfall_bytes > 0 and tiny.plan_json() is None


def test_a_measured_zero_overhead_is_used_and_an_unmeasured_one_gets_the_default() -> None:
    spec = JobSpec(student="tiny", image_size=32, rounds=1, local_steps=1, learning_rate=0.1)
    hardware = _hardware(200 * MIB)

    plans = {
        fraction: plan_node(
            spec,
            hardware,
            _payload(fraction),
            None,
            ram_fraction=0.85,
            default_overhead_fraction=0.5,
        ).plan
        for fraction in (0.0, None, 0.5)
    }

    measured_zero, unmeasured, half = plans[0.0], plans[None], plans[0.5]
    assert measured_zero is not None and unmeasured is not None and half is not None
    assert unmeasured.batch_size == half.batch_size < measured_zero.batch_size


@pytest.mark.parametrize(
    ("payload_format", "stored", "expected"),
    [
        (2, 0.0, 0.0),
        (2, None, None),
        (2, 0.25, 0.25),
        # Format 1 (no "format" key) wrote 0.0 for "not measured".
        (None, 0.0, None),
        (None, 0.25, 0.25),
    ],
)
def test_stored_payloads_read_back_what_the_board_measured(
    payload_format: int | None, stored: float | None, expected: float | None
) -> None:
    data = json.loads(_payload().to_json())
    del data["format"]
    if payload_format is not None:
        data["format"] = payload_format
    data["allocator_overhead_fraction"] = stored

    payload = MemoryModelPayload.from_json(json.dumps(data))

    assert payload.allocator_overhead_fraction == expected
    assert MemoryModelPayload.from_json(payload.to_json()) == payload


def test_a_model_library_the_board_measured_is_a_term_of_every_plan() -> None:
    spec = JobSpec(student="tiny", image_size=32, rounds=1, local_steps=1, learning_rate=0.1)
    hardware = _hardware(200 * MIB)
    lean = _payload()
    with_library = MemoryModelPayload(lean.memory_model, 0.1, 0, 40 * MIB)

    without = plan_node(spec, hardware, lean, None, ram_fraction=0.85).plan
    loaded = plan_node(spec, hardware, with_library, None, ram_fraction=0.85).plan
    as_teacher = plan_node(spec, hardware, lean, with_library, ram_fraction=0.85).plan

    assert without is not None and loaded is not None and as_teacher is not None
    assert without.terms.model_libraries == 0
    assert loaded.terms.model_libraries == as_teacher.terms.model_libraries == 40 * MIB
    assert loaded.batch_size < without.batch_size
    assert loaded.predicted_peak_bytes <= 200 * MIB


def test_payloads_stored_before_boards_measured_libraries_read_as_none_loaded() -> None:
    data = json.loads(MemoryModelPayload(_payload().memory_model, 0.1, 0, 40 * MIB).to_json())
    del data["model_library_bytes"]

    payload = MemoryModelPayload.from_json(json.dumps(data))

    assert payload.model_library_bytes == 0
    assert MemoryModelPayload.from_json(_payload().to_json()) == _payload()


def test_a_stored_plan_reads_back_typed_as_it_was_made() -> None:
    spec = JobSpec(student="tiny", image_size=32, rounds=1, local_steps=1, learning_rate=0.1)
    result = plan_node(spec, _hardware(400 * MIB), _payload(), None, ram_fraction=0.85)
    assert result.plan is not None and result.plan_json() is not None

    stored = StoredPlan.from_json(result.plan_json() or "")

    assert stored.batch_size == result.plan.batch_size
    assert stored.predicted_peak_bytes == result.plan.predicted_peak_bytes
    assert stored.sequence == tuple(result.plan.schedule.to_strings())
    assert stored.budget_bytes == result.budget_bytes
    assert stored.store_all_max_batch == result.plan.store_all_max_batch
