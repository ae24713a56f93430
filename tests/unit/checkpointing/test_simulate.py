import pytest

from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Schedule
from checkpointing.planning.simulate import ScheduleError, simulate

CHAIN = Chain(
    fw=[1.0, 2.0],
    bw=[3.0, 4.0, 5.0],
    cw=[10, 20, 30],
    cbw=[0, 25, 35],
    ftmp=[1, 2],
    btmp=[3, 4, 5],
)


def test_store_all_memory_step_by_step() -> None:
    schedule = Schedule.from_strings(2, ["Fe_0", "Fe_1", "Loss", "Bwd_1", "Bwd_0"])

    simulation = simulate(CHAIN, schedule)

    afters = [t.after for t in simulation.trace]
    peaks = [t.peak for t in simulation.trace]
    # After Bwd_1, d_1 sits beside the tape of stage 0, which still holds a_1.
    assert afters == [35, 70, 100, 55, 10]
    assert peaks == [36, 72, 75, 104, 58]
    assert simulation.peak == 104
    assert simulation.makespan == 1 + 2 + 5 + 4 + 3


def test_checkpoint_then_drop() -> None:
    schedule = Schedule.from_strings(
        2, ["Fc_0", "Fn_1", "Loss", "Fc_0", "Fe_1", "Bwd_1", "Fe_0", "Bwd_0"]
    )

    simulation = simulate(CHAIN, schedule)

    assert [t.after for t in simulation.trace] == [30, 40, 40, 60, 95, 30, 55, 10]
    assert simulation.peak == 99


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (["Bwd_0"], r"operation 0 \(Bwd_0\): the tape of stage 0"),
        (["Fe_0", "Bwd_0"], r"operation 1 \(Bwd_0\): the gradient d_1"),
        (["Fn_0"], "input a_0 cannot be dropped"),
        (["Loss"], "a_2 .* not in memory"),
        (["Fe_0", "Fe_1", "Loss", "Bwd_1"], "ends before"),
        (["Fe_0", "Fe_1", "Loss", "Bwd_1", "Fe_1", "Bwd_0"], "leaves tape of stage 1"),
        (["Fe_0", "Fe_1", "Loss", "Bwd_1", "Fc_0", "Bwd_0"], "leaves a_1"),
        (["Fe_0", "Fe_0"], "already in memory"),
    ],
)
def test_invalid_schedules_name_the_problem(ops: list[str], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        simulate(CHAIN, Schedule.from_strings(2, ops))


def test_unknown_operation_rejected() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        Schedule.from_strings(2, ["Fx_0"])
    with pytest.raises(ValueError, match="stage 5"):
        Schedule.from_strings(2, ["Fe_5"])
