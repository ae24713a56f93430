import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointing.planning.budget import Optimizer, ProcessFacts
from checkpointing.planning.chain import Chain
from checkpointing.planning.planner import OPTIMAL, STORE_ALL, PlanError, PlanRequest, plan_training
from checkpointing.planning.simulate import simulate
from checkpointing.planning.solvers.baselines import store_all

MIB = 2**20


@dataclass(frozen=True)
class LinearModel:
    """A chain whose sizes and times grow in proportion to the batch (a memory model's shape)."""

    per_sample: Chain
    parameter_bytes: int = 4 * MIB
    buffer_bytes: int = 0

    def predict(self, batch_size: int, image_size: int) -> Chain:
        data = self.per_sample.to_dict()
        scaled = {
            key: [v * batch_size for v in values] if key != "saves_output" else values
            for key, values in data.items()
        }
        return Chain(**{key: tuple(values) for key, values in scaled.items()})  # type: ignore[arg-type]


def _per_sample(length: int = 8) -> Chain:
    """A chain with a few big early activations, as convolutional nets have (bytes per sample)."""
    sizes = [3 * MIB // 4, 2 * MIB, 2 * MIB, MIB, MIB, MIB // 2, MIB // 2, MIB // 4, MIB // 64]
    sizes = sizes[: length + 1]
    return Chain(
        fw=(1e-3,) * length,
        bw=(2e-3,) * (length + 1),
        cw=tuple(float(s) for s in sizes),
        cbw=(0.0, *(2.0 * s for s in sizes[1:])),
        ftmp=(0.0,) * length,
        btmp=(0.0, *(float(s) for s in sizes[1:])),
    )


FACTS = ProcessFacts(runtime_baseline_bytes=600 * MIB, allocator_overhead_fraction=0.05)
MODEL = LinearModel(_per_sample())


def _usable(request: PlanRequest, facts: ProcessFacts = FACTS) -> float:
    baseline = facts.runtime_baseline_bytes
    return baseline + (request.budget_bytes - baseline) * (1 - request.margin)


def test_largest_batch_fits_and_is_maximal() -> None:
    request = PlanRequest(image_size=64, budget_bytes=1024 * MIB, max_overhead=1.5)

    plan = plan_training(MODEL, request, FACTS)

    assert plan.predicted_peak_bytes <= _usable(request)
    chain = MODEL.predict(plan.batch_size, 64)
    assert simulate(chain, plan.schedule).peak == plan.terms.activations + plan.terms.input_batch
    assert plan.time_overhead <= 1.5
    assert plan.strategy == OPTIMAL
    assert plan.batch_size > plan.store_all_max_batch
    bigger = plan_training(
        MODEL, PlanRequest(64, 1024 * MIB, batch_size=plan.batch_size + 1), FACTS
    )
    assert bigger.accumulation_steps > 1 or bigger.time_overhead > 1.5


def test_store_all_max_batch_is_the_largest_that_fits_without_recomputation() -> None:
    request = PlanRequest(image_size=64, budget_bytes=1024 * MIB)

    plan = plan_training(MODEL, request, FACTS)

    def store_all_fits(batch: int) -> bool:
        chain = MODEL.predict(batch, 64)
        asked = plan_training(MODEL, PlanRequest(64, 1024 * MIB, batch_size=batch), FACTS)
        return asked.strategy == STORE_ALL and simulate(chain, store_all(chain.length)).peak > 0

    assert plan.store_all_max_batch >= 1
    assert store_all_fits(plan.store_all_max_batch)
    assert not store_all_fits(plan.store_all_max_batch + 1)


def test_asked_batch_that_fits_is_given() -> None:
    request = PlanRequest(64, 1024 * MIB, batch_size=12)

    plan = plan_training(MODEL, request, FACTS)

    assert plan.batch_size == 12
    assert plan.accumulation_steps == 1
    assert plan.predicted_peak_bytes <= _usable(request)


def test_asked_batch_too_large_is_reached_by_accumulation() -> None:
    request = PlanRequest(64, 1024 * MIB, batch_size=5000)

    plan = plan_training(MODEL, request, FACTS)

    assert plan.accumulation_steps > 1
    assert plan.batch_size * plan.accumulation_steps >= 5000
    assert plan.predicted_peak_bytes <= _usable(request)
    assert "accumulation" in plan.notes[0]


def test_nothing_fits_reports_shortfall() -> None:
    request = PlanRequest(image_size=64, budget_bytes=620 * MIB)

    with pytest.raises(PlanError, match="not even batch 1") as caught:
        plan_training(MODEL, request, FACTS)

    shortfall = caught.value.shortfall_bytes
    assert shortfall > 0
    enough = PlanRequest(image_size=64, budget_bytes=620 * MIB + shortfall + 1)
    assert plan_training(MODEL, enough, FACTS).batch_size >= 1


def test_adam_and_teacher_leave_less_room() -> None:
    sgd = plan_training(MODEL, PlanRequest(64, 1024 * MIB), FACTS)
    adam = plan_training(MODEL, PlanRequest(64, 1024 * MIB, optimizer=Optimizer.ADAM), FACTS)
    teacher = LinearModel(_per_sample(), parameter_bytes=100 * MIB)
    taught = plan_training(MODEL, PlanRequest(64, 1024 * MIB), FACTS, teacher=teacher)

    assert adam.terms.optimizer_state == 2 * sgd.terms.optimizer_state
    assert taught.terms.teacher > 100 * MIB
    assert taught.batch_size < sgd.batch_size
    assert adam.batch_size <= sgd.batch_size


@settings(max_examples=30, deadline=None)
@given(
    budget_mib=st.integers(640, 3000),
    batch=st.one_of(st.none(), st.integers(1, 200)),
    overhead=st.floats(1.0, 3.0),
    margin=st.floats(0.0, 0.3),
)
def test_never_plans_past_the_budget(
    budget_mib: int, batch: int | None, overhead: float, margin: float
) -> None:
    request = PlanRequest(
        image_size=64,
        budget_bytes=budget_mib * MIB,
        batch_size=batch,
        max_overhead=overhead,
        margin=margin,
    )
    try:
        plan = plan_training(MODEL, request, FACTS)
    except PlanError as error:
        assert error.shortfall_bytes > 0
        return

    chain = MODEL.predict(plan.batch_size, 64)
    peak = simulate(chain, plan.schedule).peak
    assert peak == plan.terms.activations + plan.terms.input_batch
    assert plan.predicted_peak_bytes <= math.floor(_usable(request)) + 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("budget_bytes", 0, "memory budget"),
        ("batch_size", 0, "batch size"),
        ("max_overhead", 0.5, "max overhead"),
        ("margin", 1.0, "margin"),
    ],
)
def test_bad_requests_rejected(field: str, value: float, message: str) -> None:
    arguments: dict[str, object] = {"image_size": 64, "budget_bytes": MIB, field: value}
    with pytest.raises(ValueError, match=message):
        PlanRequest(**arguments)  # type: ignore[arg-type]
