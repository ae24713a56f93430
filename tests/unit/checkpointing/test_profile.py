from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import nn

from checkpointing.execution.accountant import LiveTensorAccountant
from checkpointing.execution.execute import run_schedule
from checkpointing.execution.profile import (
    ChainProfile,
    ProfileConfig,
    ProfileError,
    profile_stages,
)
from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Op, OpKind, make_schedule
from checkpointing.planning.simulate import simulate

BATCH = 4
CLASSES = 10
FLOAT_BYTES = 4
FAST = ProfileConfig(repeats=2, warmup=1)


def _conv_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, CLASSES),
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, 32, 32, generator=generator)
    targets = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    return images, targets


def _cross_entropy(targets: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda logits: nn.functional.cross_entropy(logits, targets)


@pytest.fixture(scope="module")
def profiled() -> tuple[nn.Sequential, ChainProfile]:
    torch.manual_seed(0)
    net = _conv_net()
    images, targets = _batch()
    return net, profile_stages(list(net), images, _cross_entropy(targets), FAST)


def _store_all(length: int) -> list[Op]:
    forwards = [Op(OpKind.FORWARD_ENABLE, j) for j in range(length)]
    backwards = [Op(OpKind.BACKWARD, j) for j in reversed(range(length))]
    return [*forwards, Op(OpKind.LOSS, length), *backwards]


def _preallocate_grads(net: nn.Module) -> None:
    for param in net.parameters():
        param.grad = torch.zeros_like(param)


def test_sizes_are_non_negative_and_times_positive(
    profiled: tuple[nn.Sequential, ChainProfile],
) -> None:
    _, profile = profiled
    chain = profile.chain

    sizes = (*chain.cw, *chain.cbw, *chain.ftmp, *chain.btmp)

    assert chain.length == 10
    assert all(size >= 0 for size in sizes)
    assert chain.is_integral
    assert all(t > 0 for t in chain.fw)
    assert all(t > 0 for t in chain.bw)


def test_cw_is_the_storage_size_of_every_real_activation(
    profiled: tuple[nn.Sequential, ChainProfile],
) -> None:
    net, profile = profiled
    images, _ = _batch()
    expected = [images.numel() * FLOAT_BYTES]

    with torch.no_grad():
        activation = images
        for stage in net:
            activation = stage(activation)
            expected.append(activation.untyped_storage().nbytes())

    assert list(profile.chain.cw) == expected
    assert profile.chain.cw[-1] == BATCH * CLASSES * FLOAT_BYTES


def test_tapes_of_conv_relu_and_linear_stages_are_their_outputs(
    profiled: tuple[nn.Sequential, ChainProfile],
) -> None:
    _, profile = profiled
    chain = profile.chain
    conv_output = BATCH * 16 * 32 * 32 * FLOAT_BYTES

    # The conv saves its input (excluded) and weight (a parameter): its tape is its output.
    assert chain.cbw[1] == conv_output
    # ReLU saves only its output.
    assert chain.cbw[3] == conv_output
    # Max pooling keeps its output and the int64 indices of the maxima.
    assert chain.cbw[4] == conv_output // 4 + conv_output // 4 * 2
    # Linear saves its input (excluded) and weight (a parameter): its tape is its output.
    assert chain.cbw[10] == BATCH * CLASSES * FLOAT_BYTES
    # Flatten returns a view of its input: nothing new.
    assert chain.cbw[9] == 0


def test_only_tapes_that_need_their_output_save_it(
    profiled: tuple[nn.Sequential, ChainProfile],
) -> None:
    _, profile = profiled

    saves_output = profile.chain.saves_output

    # ReLU computes its gradient from its result; Flatten's output is a view of its input, so
    # dropping it frees nothing either. Convolution, batch norm, max pooling and the linear
    # layer keep their inputs (or indices), not their outputs.
    assert saves_output == (False, False, True, False, False, False, True, False, True, False)


def test_a_tape_that_does_not_save_its_output_still_counts_it(
    profiled: tuple[nn.Sequential, ChainProfile],
) -> None:
    _, profile = profiled
    chain = profile.chain

    unsaved = [j for j in range(chain.length) if not chain.output_saved[j]]

    assert unsaved
    assert all(chain.cbw[j + 1] >= chain.cw[j + 1] for j in unsaved)


def test_relu_stage_needs_no_forward_temporaries(
    profiled: tuple[nn.Sequential, ChainProfile],
) -> None:
    _, profile = profiled

    relu_stages = [2, 6]

    assert [profile.chain.ftmp[j] for j in relu_stages] == [0, 0]


def test_backward_temporaries_hold_input_and_parameter_gradients(
    profiled: tuple[nn.Sequential, ChainProfile],
) -> None:
    net, profile = profiled
    linear = net[9]
    assert isinstance(linear, nn.Linear)
    parameter_bytes = sum(p.numel() * FLOAT_BYTES for p in linear.parameters())
    first_conv_parameter_bytes = sum(p.numel() * FLOAT_BYTES for p in net[0].parameters())

    linear_btmp = profile.chain.btmp[9]
    first_conv_btmp = profile.chain.btmp[0]

    # Its input gradient plus the weight and bias gradients added into the preallocated buffers.
    assert linear_btmp == profile.chain.cw[9] + parameter_bytes
    # The model input needs no gradient, so only the parameter gradients are computed.
    assert first_conv_btmp == first_conv_parameter_bytes


def test_profiling_leaves_no_trace() -> None:
    torch.manual_seed(0)
    net = _conv_net()
    images, targets = _batch()
    first_conv = net[0]
    assert isinstance(first_conv, nn.Conv2d)
    existing_grad = torch.randn_like(first_conv.weight)
    first_conv.weight.grad = existing_grad
    grad_before = existing_grad.clone()
    state_before = {k: v.clone() for k, v in net.state_dict().items()}
    rng_before = torch.get_rng_state()

    profile_stages(list(net), images, _cross_entropy(targets), FAST)

    state_after = net.state_dict()
    assert state_after.keys() == state_before.keys()
    assert all(torch.equal(state_after[k], v) for k, v in state_before.items())
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert first_conv.weight.grad is existing_grad
    assert torch.equal(existing_grad, grad_before)
    others = [p for p in net.parameters() if p is not first_conv.weight]
    assert all(p.grad is None for p in others)


def test_profile_round_trips_through_json(
    profiled: tuple[nn.Sequential, ChainProfile],
) -> None:
    _, profile = profiled

    restored = ChainProfile.from_dict(json.loads(json.dumps(profile.to_dict())))

    assert restored == profile
    chain_data = profile.to_dict()["chain"]
    assert isinstance(chain_data, dict)
    assert chain_data["saves_output"] == list(profile.chain.output_saved)
    assert restored.chain.saves_output == profile.chain.saves_output
    assert restored.batch_size == BATCH
    assert restored.input_shape == (BATCH, 3, 32, 32)
    assert restored.device == "cpu"
    assert restored.stage_names == tuple(f"stage_{j}" for j in range(10))


def test_from_dict_rejects_bad_profiles(
    profiled: tuple[nn.Sequential, ChainProfile],
) -> None:
    _, profile = profiled
    good = profile.to_dict()

    with pytest.raises(ProfileError, match="missing"):
        ChainProfile.from_dict({k: v for k, v in good.items() if k != "device"})
    with pytest.raises(ProfileError, match="stage names"):
        ChainProfile.from_dict({**good, "stage_names": ["only one"]})
    with pytest.raises(ProfileError, match="batch size"):
        ChainProfile.from_dict({**good, "batch_size": BATCH + 1})
    with pytest.raises(ValueError, match="cw"):
        ChainProfile.from_dict({**good, "chain": {**profile.chain.to_dict(), "cw": [1.0]}})


@pytest.mark.parametrize(("repeats", "warmup"), [(0, 1), (3, -1), (True, 1), (2.5, 1)])
def test_config_rejects_bad_settings(repeats: object, warmup: object) -> None:
    with pytest.raises(ProfileError):
        ProfileConfig(repeats=repeats, warmup=warmup)  # type: ignore[arg-type]


def test_stage_names_must_match_stages() -> None:
    images, targets = _batch()

    with pytest.raises(ProfileError, match="stage names"):
        profile_stages([nn.ReLU()], images, _cross_entropy(targets), FAST, ["a", "b"])


def test_parameter_free_first_stage_has_no_backward() -> None:
    images, targets = _batch()
    stages = [nn.ReLU(), nn.Flatten(), nn.Linear(3 * 32 * 32, CLASSES)]

    profile = profile_stages(stages, images, _cross_entropy(targets), FAST)

    assert profile.chain.bw[0] == 0
    assert profile.chain.btmp[0] == 0
    assert profile.chain.cbw[1] == images.numel() * FLOAT_BYTES


def _block_net() -> nn.Sequential:
    """Conv, batch norm and ReLU in one stage: every stage's input is saved by that stage."""

    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

    return nn.Sequential(
        block(3, 16),
        nn.MaxPool2d(2),
        block(16, 32),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, CLASSES),
    )


def _step_peak(
    stages: Sequence[nn.Module],
    images: torch.Tensor,
    step: Callable[[torch.Tensor], None],
) -> int:
    """Activation peak of ``step`` as docs/checkpointing.md defines it."""
    accountant = LiveTensorAccountant()
    accountant.track(
        images, *(p.grad for s in stages for p in s.parameters() if p.grad is not None)
    )
    start = accountant.live_bytes
    with accountant:
        accountant.reset_peak()
        step(images)
    return accountant.peak_bytes - (start - images.untyped_storage().nbytes())


def _executor_store_all(
    stages: Sequence[nn.Module], loss_fn: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], None]:
    schedule = make_schedule(len(stages), _store_all(len(stages)))

    def step(images: torch.Tensor) -> None:
        run_schedule(stages, schedule, images, loss_fn)

    return step


def _plain_autograd(
    stages: Sequence[nn.Module], loss_fn: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], None]:
    def step(images: torch.Tensor) -> None:
        activation = images
        for stage in stages:
            activation = stage(activation)
        loss = loss_fn(activation)
        del activation
        loss.backward()

    return step


def _store_all_peaks(net: nn.Sequential) -> tuple[Chain, float, int, int]:
    """The chain, and store-all's simulated, executed and plain-autograd activation peaks."""
    images, targets = _batch()
    stages, loss_fn = list(net), _cross_entropy(targets)
    chain = profile_stages(stages, images, loss_fn, FAST).chain
    predicted = simulate(chain, make_schedule(len(stages), _store_all(len(stages)))).peak
    _preallocate_grads(net)

    executed = _step_peak(stages, images, _executor_store_all(stages, loss_fn))
    plain = _step_peak(stages, images, _plain_autograd(stages, loss_fn))

    print(
        f"store-all: predicted {predicted:.0f} B, executed {executed} B, plain autograd {plain} B"
    )
    return chain, predicted, executed, plain


def test_store_all_prediction_matches_executor_and_plain_autograd_on_blocks() -> None:
    torch.manual_seed(0)

    _, predicted, executed, plain = _store_all_peaks(_block_net())

    assert executed == pytest.approx(predicted, rel=0.05)
    assert plain == pytest.approx(predicted, rel=0.05)


def test_store_all_prediction_matches_the_executor_on_a_net_cut_at_every_layer() -> None:
    torch.manual_seed(0)

    _, predicted, executed, _ = _store_all_peaks(_conv_net())

    assert executed == pytest.approx(predicted, rel=0.05)


def test_plain_autograd_frees_what_neither_neighbouring_tape_saves() -> None:
    torch.manual_seed(0)

    chain, predicted, _, plain = _store_all_peaks(_conv_net())

    # The batch-norm outputs a_2 and a_6 are saved by no tape: not by batch norm (it saves its
    # input), not by the out-of-place ReLU after it (it saves its result). Plain autograd frees
    # them as soon as that ReLU has run; the model (and the executor, whose stage-2 tape holds
    # its input as the leaf its gradient lands in) keeps them until d_2 and d_6 exist. The rest
    # (loss value and its seed gradient) is a few bytes.
    assert not chain.output_saved[1] and not chain.output_saved[5]
    assert predicted - plain == pytest.approx(chain.cw[2] + chain.cw[6], abs=64)
