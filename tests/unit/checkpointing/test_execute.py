"""The executor against plain autograd: same gradients, buffers, loss and RNG, for any schedule."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from checkpointing.execution.accountant import LiveTensorAccountant
from checkpointing.execution.execute import _Step, run_schedule
from checkpointing.execution.profile import ProfileConfig, profile_stages
from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Op, Schedule
from checkpointing.planning.simulate import ScheduleError, simulate

LossFn = Callable[[torch.Tensor], torch.Tensor]
ScheduleFactory = Callable[[int], Schedule]

_SEED = 1234


# Schedules, written as the operation strings of checkpointing/planning/schedule.py.


def _store_all(length: int) -> Schedule:
    ops = [f"Fe_{j}" for j in range(length)] + ["Loss"]
    ops += [f"Bwd_{j}" for j in reversed(range(length))]
    return Schedule.from_strings(length, ops)


def _forwards_to(j: int) -> list[str]:
    """Recompute ``a_j`` from ``a_0``, keeping nothing on the way (nothing at all for j = 0)."""
    if j == 0:
        return []
    return ["Fc_0"] + [f"Fn_{i}" for i in range(1, j)]


def _recompute_all(length: int) -> Schedule:
    ops = [*_forwards_to(length), "Loss"]
    for j in reversed(range(length)):
        ops += [*_forwards_to(j), f"Fe_{j}", f"Bwd_{j}"]
    return Schedule.from_strings(length, ops)


def _checkpoint_sequential(length: int, segments: int = 3) -> Schedule:
    """As torch.utils.checkpoint.checkpoint_sequential: segment inputs kept, last segment taped."""
    bounds = [round(k * length / segments) for k in range(segments + 1)]
    *checkpointed, (last_start, _) = itertools.pairwise(bounds)
    ops: list[str] = []
    for start, end in checkpointed:
        ops += [f"Fc_{start}"] + [f"Fn_{j}" for j in range(start + 1, end)]
    ops += [f"Fe_{j}" for j in range(last_start, length)] + ["Loss"]
    ops += [f"Bwd_{j}" for j in reversed(range(last_start, length))]
    for start, end in reversed(checkpointed):
        ops += [f"Fe_{j}" for j in range(start, end)]
        ops += [f"Bwd_{j}" for j in reversed(range(start, end))]
    return Schedule.from_strings(length, ops)


def _mixed(length: int) -> Schedule:
    """Fe chains with Fc leaves (checkpoints kept inside tapes), as a rotor schedule looks."""
    assert length == 8
    ops = ["Fe_0", "Fe_1", "Fc_2", "Fn_3", "Fe_4", "Fe_5", "Fc_6", "Fe_7", "Loss"]
    ops += ["Bwd_7", "Fe_6", "Bwd_6", "Bwd_5", "Bwd_4"]
    ops += ["Fc_2", "Fe_3", "Bwd_3", "Fe_2", "Bwd_2", "Bwd_1", "Bwd_0"]
    return Schedule.from_strings(length, ops)


def _rerun_while_taped(length: int) -> Schedule:
    """Stage 0 runs again without grad while its own tape (which saved its buffers) is alive."""
    ops = ["Fe_0", "Fc_0", "Fn_1"] + [f"Fe_{j}" for j in range(2, length)] + ["Loss"]
    ops += [f"Bwd_{j}" for j in reversed(range(2, length))] + ["Fe_1", "Bwd_1", "Bwd_0"]
    return Schedule.from_strings(length, ops)


_SCHEDULES: dict[str, ScheduleFactory] = {
    "store_all": _store_all,
    "recompute_all": _recompute_all,
    "checkpoint_sequential": _checkpoint_sequential,
    "mixed": _mixed,
    "rerun_while_taped": _rerun_while_taped,
}


# Models and the plain training they are compared with.


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


def _small_net() -> nn.Sequential:
    """Eight stages with BatchNorm and Dropout, in train mode."""
    torch.manual_seed(0)
    model = nn.Sequential(
        _conv_block(3, 8),
        _conv_block(8, 8),
        nn.MaxPool2d(2),
        nn.Dropout(0.3),
        _conv_block(8, 16),
        nn.Sequential(_conv_block(16, 16), nn.Dropout2d(0.2)),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        nn.Linear(16, 10),
    )
    return model.train()


def _batch(batch: int, classes: int) -> tuple[torch.Tensor, LossFn]:
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(batch, 3, 32, 32, generator=generator)
    targets = torch.randint(0, classes, (batch,), generator=generator)

    def loss_fn(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    return inputs, loss_fn


def _plain_step(model: nn.Module, inputs: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    torch.manual_seed(_SEED)
    loss = loss_fn(model(inputs))
    loss.backward()
    return loss.detach()


def _executor_step(
    stages: Sequence[nn.Module], schedule: Schedule, inputs: torch.Tensor, loss_fn: LossFn
) -> torch.Tensor:
    torch.manual_seed(_SEED)
    return run_schedule(stages, schedule, inputs, loss_fn)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    grads = {}
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        grads[name] = parameter.grad
    return grads


def _assert_tensors_equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    different = [name for name in want if not torch.equal(got[name], want[name])]
    assert not different, f"not bitwise equal: {different}"


def _assert_same_step(got: nn.Module, want: nn.Module) -> None:
    _assert_tensors_equal(_grads(got), _grads(want))
    _assert_tensors_equal(dict(got.named_buffers()), dict(want.named_buffers()))
    _assert_tensors_equal(dict(got.named_parameters()), dict(want.named_parameters()))


# One step and two optimizer steps against plain autograd.


@pytest.mark.parametrize("name", sorted(_SCHEDULES))
def test_one_step_matches_plain_autograd(name: str) -> None:
    model = _small_net()
    reference = copy.deepcopy(model)
    inputs, loss_fn = _batch(4, 10)
    schedule = _SCHEDULES[name](len(model))

    want_loss = _plain_step(reference, inputs, loss_fn)
    want_rng = torch.get_rng_state()
    got_loss = _executor_step(list(model), schedule, inputs, loss_fn)
    got_rng = torch.get_rng_state()

    assert torch.equal(got_loss, want_loss)
    assert not got_loss.requires_grad
    _assert_same_step(model, reference)
    assert torch.equal(got_rng, want_rng)


@pytest.mark.parametrize("name", sorted(_SCHEDULES))
def test_two_sgd_momentum_steps_match_plain_training(name: str) -> None:
    model = _small_net()
    reference = copy.deepcopy(model)
    inputs, loss_fn = _batch(4, 10)
    schedule = _SCHEDULES[name](len(model))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)

    want_losses, got_losses = [], []
    for _ in range(2):
        want_losses.append(_plain_step(reference, inputs, loss_fn))
        reference_optimizer.step()
        reference_optimizer.zero_grad()
        got_losses.append(_executor_step(list(model), schedule, inputs, loss_fn))
        optimizer.step()
        optimizer.zero_grad()
    want_losses.append(_plain_step(reference, inputs, loss_fn))
    got_losses.append(_executor_step(list(model), schedule, inputs, loss_fn))

    assert all(torch.equal(g, w) for g, w in zip(got_losses, want_losses, strict=True))
    assert not torch.equal(got_losses[0], got_losses[2]), "the steps changed nothing"
    _assert_same_step(model, reference)


def test_a_parameter_free_first_stage_has_nothing_to_propagate() -> None:
    model = nn.Sequential(nn.Dropout(0.5), *_small_net()).train()
    reference = copy.deepcopy(model)
    inputs, loss_fn = _batch(4, 10)

    want_loss = _plain_step(reference, inputs, loss_fn)
    got_loss = _executor_step(list(model), _recompute_all(len(model)), inputs, loss_fn)

    assert torch.equal(got_loss, want_loss)
    _assert_same_step(model, reference)


def _net_with_views() -> nn.Sequential:
    """Stages whose output is their input (Identity) or a view of it (Flatten)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Identity(),
        _conv_block(3, 8),
        nn.MaxPool2d(4),
        nn.Flatten(),
        nn.Identity(),
        nn.Linear(8 * 8 * 8, 10),
    )
    return model.train()


@pytest.mark.parametrize("name", ["store_all", "recompute_all", "checkpoint_sequential"])
def test_stage_outputs_that_are_their_inputs_or_views_of_them_match_plain_autograd(
    name: str,
) -> None:
    model = _net_with_views()
    reference = copy.deepcopy(model)
    inputs, loss_fn = _batch(4, 10)
    schedule = _SCHEDULES[name](len(model))

    want_loss = _plain_step(reference, inputs, loss_fn)
    got_loss = _executor_step(list(model), schedule, inputs, loss_fn)

    assert torch.equal(got_loss, want_loss)
    _assert_same_step(model, reference)


def test_a_step_leaves_the_input_batch_unchanged() -> None:
    model = _small_net()
    inputs, loss_fn = _batch(4, 10)
    before = inputs.clone()

    _executor_step(list(model), _recompute_all(len(model)), inputs, loss_fn)

    assert torch.equal(inputs, before)


class _DoubleInPlace(nn.Module):
    """Breaks the splitter's promise: it modifies its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(2.0)


def test_the_comparison_catches_a_stage_that_corrupts_stored_activations() -> None:
    model = nn.Sequential(_DoubleInPlace(), *_small_net()).train()
    reference = copy.deepcopy(model)
    inputs, loss_fn = _batch(4, 10)
    _plain_step(reference, inputs.clone(), loss_fn)

    _executor_step(list(model), _recompute_all(len(model)), inputs, loss_fn)

    with pytest.raises(AssertionError, match="not bitwise equal"):
        _assert_same_step(model, reference)


# Invalid schedules are refused before anything runs.


@pytest.mark.parametrize(
    ("ops", "named"),
    [
        (["Fe_0", "Fe_1", "Bwd_1", "Loss", "Bwd_0"], "operation 2 (Bwd_1)"),
        (["Fn_0", "Fe_1", "Loss", "Bwd_1", "Bwd_0"], "operation 0 (Fn_0)"),
        (["Fe_1", "Fe_0", "Loss", "Bwd_1", "Bwd_0"], "operation 0 (Fe_1)"),
        (["Fe_0", "Fe_1", "Loss", "Bwd_1"], "backward pass reaches stage 0"),
        (["Fe_0", "Fe_1", "Loss", "Bwd_1", "Fe_1", "Bwd_0"], "leaves tape of stage 1"),
    ],
)
def test_an_invalid_schedule_raises_naming_the_problem_and_runs_nothing(
    ops: list[str], named: str
) -> None:
    model = nn.Sequential(_conv_block(3, 4), nn.Sequential(nn.Flatten(), nn.Linear(4 * 32 * 32, 3)))
    inputs, loss_fn = _batch(2, 3)
    schedule = Schedule.from_strings(2, ops)
    buffers_before = copy.deepcopy(dict(model.named_buffers()))
    rng_before = torch.get_rng_state()

    with pytest.raises(ScheduleError, match=named.replace("(", r"\(").replace(")", r"\)")):
        run_schedule(list(model), schedule, inputs, loss_fn)

    assert all(p.grad is None for p in model.parameters())
    _assert_tensors_equal(dict(model.named_buffers()), buffers_before)
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_a_forward_from_an_output_dropped_for_its_gradient_raises_naming_it() -> None:
    # Y_0 (a_1) goes once d_1 exists. No schedule that simulate() accepts needs it afterwards
    # (nothing could consume what such a forward stores), so run_schedule never gets here: the
    # step is driven directly, as run_schedule drives it, to check the executor's own guard.
    model = nn.Sequential(_conv_block(3, 4), nn.Sequential(nn.Flatten(), nn.Linear(4 * 32 * 32, 3)))
    inputs, loss_fn = _batch(2, 3)
    schedule = Schedule.from_strings(2, ["Fe_0", "Fe_1", "Loss", "Bwd_1", "Fc_1"])
    step = _Step(list(model), schedule, inputs, loss_fn)
    *ran, (last_position, last_op) = enumerate(schedule)
    for position, op in ran:
        step.apply(position, op)

    with pytest.raises(ScheduleError, match=r"operation 4 \(Fc_1\): a_1 is not in memory"):
        step.apply(last_position, last_op)


def test_a_schedule_for_another_number_of_stages_raises() -> None:
    model = _small_net()
    inputs, loss_fn = _batch(4, 10)

    with pytest.raises(ScheduleError, match="for 7 stages, 8 stages"):
        run_schedule(list(model), _store_all(7), inputs, loss_fn)


# Torchvision models, cut by hand at their top-level pieces.


def _resnet18_stages(model: torchvision.models.ResNet) -> list[nn.Module]:
    # The cut before the stem's in-place ReLU would let it write into the stored BN output (and
    # autograd refuses an in-place op on the stage's input leaf), so that stage is an
    # out-of-place ReLU: same values, same gradients.
    return [
        model.conv1,
        model.bn1,
        nn.ReLU(inplace=False),
        model.maxpool,
        model.layer1,
        model.layer2,
        model.layer3,
        model.layer4,
        nn.Sequential(model.avgpool, nn.Flatten(1)),
        model.fc,
    ]


def _mobilenet_v2_stages(model: torchvision.models.MobileNetV2) -> list[nn.Module]:
    # Every piece of `features` starts with a convolution, so no cut meets an in-place op.
    pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1))
    return [*model.features, pool, model.classifier]


def _max_relative_difference(got: nn.Module, want: nn.Module) -> float:
    got_grads, want_grads = _grads(got), _grads(want)
    worst = 0.0
    for name, want_grad in want_grads.items():
        scale = want_grad.abs().max().item() or 1.0
        worst = max(worst, (got_grads[name] - want_grad).abs().max().item() / scale)
    return worst


@pytest.mark.parametrize(
    ("build", "cut", "schedule_for"),
    [
        (torchvision.models.resnet18, _resnet18_stages, _recompute_all),
        (torchvision.models.mobilenet_v2, _mobilenet_v2_stages, _recompute_all),
    ],
    ids=["resnet18", "mobilenet_v2"],
)
def test_a_torchvision_model_cut_by_hand_matches_plain_autograd(
    build: Callable[..., nn.Module],
    cut: Callable[[nn.Module], list[nn.Module]],
    schedule_for: ScheduleFactory,
) -> None:
    torch.manual_seed(0)
    model = build(weights=None, num_classes=10).train()
    reference = copy.deepcopy(model)
    inputs, loss_fn = _batch(2, 10)
    stages = cut(model)

    want_loss = _plain_step(reference, inputs, loss_fn)
    want_rng = torch.get_rng_state()
    got_loss = _executor_step(stages, schedule_for(len(stages)), inputs, loss_fn)

    difference = _max_relative_difference(model, reference)
    assert torch.equal(got_loss, want_loss)
    assert difference == 0.0, f"gradients differ by up to {difference:.3g} (relative)"
    _assert_same_step(model, reference)
    assert torch.equal(torch.get_rng_state(), want_rng)


def test_the_in_place_relu_at_a_cut_is_why_the_hand_cut_replaces_it() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).train()
    inputs, loss_fn = _batch(2, 10)
    stages = _resnet18_stages(model)
    stages[2] = model.relu

    with pytest.raises(
        RuntimeError, match="leaf Variable that requires grad is being used in an in-place"
    ):
        _executor_step(stages, _recompute_all(len(stages)), inputs, loss_fn)


# Memory: what the schedule keeps is what the step holds, as the simulator predicts it.


@dataclass(frozen=True)
class _Profiled:
    model: nn.Module
    stages: list[nn.Module]
    inputs: torch.Tensor
    loss_fn: LossFn
    chain: Chain


def _profiled_small_net() -> _Profiled:
    model = _small_net()
    inputs, loss_fn = _batch(4, 10)
    stages = list(model)
    chain = profile_stages(stages, inputs, loss_fn, ProfileConfig(repeats=1, warmup=0)).chain
    return _Profiled(model, stages, inputs, loss_fn, chain)


def _profiled_mobilenet_v2() -> _Profiled:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10).train()
    inputs, loss_fn = _batch(2, 10)
    stages = _mobilenet_v2_stages(model)
    chain = profile_stages(stages, inputs, loss_fn, ProfileConfig(repeats=1, warmup=0)).chain
    return _Profiled(model, stages, inputs, loss_fn, chain)


@pytest.fixture(scope="module", params=["small_net", "mobilenet_v2"])
def profiled(request: pytest.FixtureRequest) -> _Profiled:
    build = {"small_net": _profiled_small_net, "mobilenet_v2": _profiled_mobilenet_v2}
    return build[request.param]()


@dataclass(frozen=True)
class _Measured:
    peak_bytes: int
    """The step's activation peak, as docs/checkpointing.md defines it."""
    op_peaks_bytes: list[int]
    """The same quantity while each operation runs."""
    op_afters_bytes: list[int]
    """The same quantity once each operation has finished."""


def _measure_step(profiled: _Profiled, schedule: Schedule) -> _Measured:
    # A first step allocates the gradient buffers, which the measured step starts with.
    _executor_step(profiled.stages, schedule, profiled.inputs, profiled.loss_fn)
    op_peaks: list[int] = []
    op_afters: list[int] = []
    with LiveTensorAccountant() as accountant:
        accountant.track(profiled.inputs, *_grads(profiled.model).values())
        base_bytes = accountant.live_bytes - profiled.inputs.untyped_storage().nbytes()
        accountant.reset_peak()

        def after_op(position: int, op: Op) -> None:
            op_peaks.append(accountant.peak_bytes - base_bytes)
            op_afters.append(accountant.live_bytes - base_bytes)
            accountant.reset_peak()

        torch.manual_seed(_SEED)
        run_schedule(profiled.stages, schedule, profiled.inputs, profiled.loss_fn, after_op)
        peak_bytes = accountant.peak_bytes - base_bytes
    return _Measured(max(peak_bytes, *op_peaks), op_peaks, op_afters)


_MEMORY_SCHEDULES = ["store_all", "recompute_all", "checkpoint_sequential"]


@pytest.mark.parametrize("name", _MEMORY_SCHEDULES)
def test_the_activation_peak_is_the_simulated_one(profiled: _Profiled, name: str) -> None:
    schedule = _SCHEDULES[name](len(profiled.stages))
    predicted = simulate(profiled.chain, schedule).peak

    measured = _measure_step(profiled, schedule)

    print(f"{name}: predicted {predicted:.0f} B, measured {measured.peak_bytes} B")
    assert measured.peak_bytes == pytest.approx(predicted, rel=0.02)


@pytest.mark.parametrize("name", _MEMORY_SCHEDULES)
def test_memory_after_every_operation_is_the_simulated_one(profiled: _Profiled, name: str) -> None:
    schedule = _SCHEDULES[name](len(profiled.stages))
    predicted = [trace.after for trace in simulate(profiled.chain, schedule).trace]

    measured = _measure_step(profiled, schedule)

    # Outputs no tape saved are gone once their gradient exists, the others stay with their
    # tape: the executor holds what the model holds, up to the loss value (a few bytes).
    differences = [
        got - want for got, want in zip(measured.op_afters_bytes, predicted, strict=True)
    ]
    worst = max(differences, key=abs)
    print(f"{name}: worst difference after an operation {worst:.0f} B")
    assert abs(worst) <= 64


def test_recomputing_everything_lowers_the_activation_peak() -> None:
    inputs_bytes = 4 * 3 * 32 * 32 * 4
    profiled = _profiled_small_net()

    store_all = _measure_step(profiled, _store_all(len(profiled.stages)))
    recompute_all = _measure_step(profiled, _recompute_all(len(profiled.stages)))

    assert inputs_bytes < recompute_all.peak_bytes < store_all.peak_bytes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dropout_on_cuda_replays_the_cuda_rng() -> None:
    model = _small_net().cuda()
    reference = copy.deepcopy(model)
    inputs, loss_fn = _batch(4, 10)
    inputs = inputs.cuda()

    def cuda_loss_fn(logits: torch.Tensor) -> torch.Tensor:
        return loss_fn(logits.cpu())

    want_loss = _plain_step(reference, inputs, cuda_loss_fn)
    want_rng = torch.cuda.get_rng_state()
    got_loss = _executor_step(list(model), _recompute_all(len(model)), inputs, cuda_loss_fn)

    torch.testing.assert_close(got_loss, want_loss)
    torch.testing.assert_close(_grads(model), _grads(reference))
    assert torch.equal(torch.cuda.get_rng_state(), want_rng)
