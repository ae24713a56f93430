"""split_model against the model itself: same output bitwise, same parameter objects, same
gradients, and no stage that modifies its input in place."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from checkpointing.execution.split import SplitError, Stage, run_stages, split_model

# Stages each torchvision model gives at every valid cut (weights=None, 32 px input). ResNets: a
# residual block is one stage (its input stays live until the add), and bn1 + relu is one stage.
# MobileNetV2: every Conv-BN-ReLU6 gives conv | bn..relu6, a residual block is one stage.
# DenseNet121: a dense block is one stage (torch.cat keeps every earlier feature map live).
_STAGE_COUNTS = {
    "mobilenet_v2": 58,
    "resnet18": 14,
    "resnet50": 22,
    "vgg11": 20,
    "densenet121": 20,
}


def _images(batch: int = 2, px: int = 32) -> torch.Tensor:
    return torch.randn(batch, 3, px, px, generator=torch.Generator().manual_seed(0))


def _forward_keeping_inputs(stages: Sequence[Stage], x: torch.Tensor) -> torch.Tensor:
    """Run the chain, each stage on a copy of its input that must come back unmodified."""
    value = x
    for stage in stages:
        given = value.clone()
        untouched = value.clone()
        value = stage.module(given)
        assert torch.equal(given, untouched), f"stage {stage.name} modified its input"
    return value


def _assert_owns_model_tensors(model: nn.Module, stages: Sequence[Stage]) -> None:
    """The stages hold exactly the model's parameter and buffer objects, no copies."""
    stage_params = {id(p) for stage in stages for p in stage.module.parameters()}
    stage_buffers = {id(b) for stage in stages for b in stage.module.buffers()}
    assert stage_params == {id(p) for p in model.parameters()}
    assert stage_buffers == {id(b) for b in model.buffers()}


class _SignGate(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return -x


class _AddOneInPlace(nn.Module):
    """Modifies its input in place without an ``inplace`` flag to turn off."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.add_(1.0)


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = _SignGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.fc(x))


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        return y, y.relu()


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * mask


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


class _InplaceOnInput(nn.Module):
    """The first op rewrites the model input in place, the way ``kind`` says."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.act = nn.ReLU(inplace=True)
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "module":
            x = self.act(x)
        elif self.kind == "function":
            x = F.relu(x, inplace=True)
        else:
            x = x.relu_()
        return self.fc2(self.fc1(x))


def _nested_sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)),
        nn.Dropout(0.5),
        nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU(inplace=True), nn.Sequential(nn.MaxPool2d(2))),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()


def test_nested_sequential_gives_its_leaf_modules_with_inplace_relus_merged() -> None:
    model = _nested_sequential()
    x = _images()

    stages = split_model(model, x)

    assert [s.name for s in stages] == ["0.0", "0.1..0.2", "1", "2.0..2.1", "2.2.0", "3", "4", "5"]
    conv, norm, relu = model[0].children()
    assert stages[0].module is conv
    assert list(stages[1].module.children()) == [norm, relu]
    _assert_owns_model_tensors(model, stages)
    with torch.no_grad():
        assert torch.equal(_forward_keeping_inputs(stages, x), model(x.clone()))


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.ReLU(inplace=True), nn.Linear(4, 2)),
        nn.Sequential(nn.Linear(4, 4), nn.Flatten(), nn.ReLU(inplace=True), nn.Linear(4, 2)),
    ],
    ids=["eval_dropout", "flatten"],
)
def test_sequential_inplace_op_on_an_alias_merges_back_to_the_producer(model: nn.Module) -> None:
    model.eval()
    x = torch.randn(2, 4)

    stages = split_model(model, x)

    # The ReLU rewrites memory shared with Linear's output, so neither cut before it is safe.
    assert [s.name for s in stages] == ["0..2", "3"]
    with torch.no_grad():
        assert torch.equal(_forward_keeping_inputs(stages, x), model(x.clone()))


def test_sequential_first_inplace_child_runs_out_of_place_on_a_copy() -> None:
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(4, 3))
    x = torch.randn(8, 4)
    untouched = x.clone()

    stages = split_model(model, x)
    with torch.no_grad():
        out = run_stages(stages, x)

    assert torch.equal(x, untouched)
    assert stages[0].module is not model[0]
    assert model[0].inplace is True
    with torch.no_grad():
        assert torch.equal(out, model(x.clone()))


def test_sequential_first_child_modifying_input_without_flag_runs_on_a_copy() -> None:
    model = nn.Sequential(_AddOneInPlace(), nn.Linear(4, 3))
    x = torch.randn(8, 4)
    untouched = x.clone()

    stages = split_model(model, x)
    with torch.no_grad():
        out = run_stages(stages, x)

    assert [s.name for s in stages] == ["0", "1"]
    assert torch.equal(x, untouched)
    with torch.no_grad():
        assert torch.equal(out, model(x.clone()))


def test_sequential_child_that_fx_cannot_trace_is_a_stage() -> None:
    model = nn.Sequential(nn.Linear(4, 4), _SignGate(), nn.Linear(4, 2))
    x = torch.randn(2, 4)

    stages = split_model(model, x)

    assert [s.name for s in stages] == ["0", "1", "2"]
    assert stages[1].module is model[1]
    with torch.no_grad():
        assert torch.equal(run_stages(stages, x), model(x))


def test_sequential_child_returning_a_tuple_is_refused_by_name() -> None:
    model = nn.Sequential(nn.Linear(4, 4), _Pair())

    with pytest.raises(SplitError, match=r"'1' \(_Pair\)"):
        split_model(model, torch.randn(2, 4))


@pytest.mark.parametrize("name", sorted(_STAGE_COUNTS))
def test_torchvision_model_chain_matches_model(name: str) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = _images()

    stages = split_model(model, x)

    assert len(stages) == _STAGE_COUNTS[name]
    _assert_owns_model_tensors(model, stages)
    with torch.no_grad():
        assert torch.equal(_forward_keeping_inputs(stages, x), model(x))


def test_resnet18_merges_each_inplace_relu_into_the_stage_before() -> None:
    model = torchvision.models.resnet18(weights=None)

    stages = split_model(model, _images())

    names = [s.name for s in stages]
    assert names[:4] == ["conv1", "bn1..relu", "maxpool", "layer1.0.conv1..layer1.0.relu"]
    assert names[-3:] == ["avgpool", "flatten", "fc"]
    assert len(stages) >= 10


def test_split_leaves_buffers_and_rng_alone() -> None:
    model = torchvision.models.resnet18(weights=None).train()
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()

    split_model(model, _images())

    assert all(torch.equal(b, before) for b, before in zip(model.buffers(), buffers, strict=True))
    assert torch.equal(torch.get_rng_state(), rng)


def _backward_through_detached_stages(
    stages: Sequence[Stage], x: torch.Tensor, weight: torch.Tensor
) -> None:
    """Backward as the executor does it: every stage input a leaf that requires grad."""
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    value = x
    for stage in stages:
        leaf = value.detach().requires_grad_(True)
        value = stage.module(leaf)
        inputs.append(leaf)
        outputs.append(value)
    (outputs[-1] * weight).sum().backward()
    for output, next_input in zip(reversed(outputs[:-1]), reversed(inputs[1:]), strict=True):
        output.backward(next_input.grad)


@pytest.mark.parametrize("detached", [False, True], ids=["run_stages", "detached_stage_inputs"])
def test_resnet18_train_mode_gradients_match_the_model(detached: bool) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).train()
    x = _images()
    weight = torch.randn(2, 1000, generator=torch.Generator().manual_seed(1))
    stages = split_model(model, x)
    (model(x) * weight).sum().backward()
    expected = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)

    if detached:
        _backward_through_detached_stages(stages, x, weight)
    else:
        (run_stages(stages, x) * weight).sum().backward()

    got = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(got) == len(expected) == len(list(model.parameters()))
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("kind", ["module", "function", "method"])
def test_traced_inplace_op_on_model_input_leaves_the_input_alone(kind: str) -> None:
    model = _InplaceOnInput(kind)
    x = torch.randn(8, 4)
    untouched = x.clone()

    stages = split_model(model, x)
    with torch.no_grad():
        out = run_stages(stages, x)

    assert torch.equal(x, untouched)
    assert len(stages) == 3
    assert model.act.inplace is True
    with torch.no_grad():
        assert torch.equal(out, model(x.clone()))


def test_traced_model_without_cut_point_is_a_single_stage() -> None:
    model = _Residual()
    x = torch.randn(2, 4)

    stages = split_model(model, x)

    assert len(stages) == 1
    with torch.no_grad():
        assert torch.equal(run_stages(stages, x), model(x))


def test_data_dependent_control_flow_is_refused_naming_the_module() -> None:
    with pytest.raises(SplitError, match=r"module 'gate' \(_SignGate\)"):
        split_model(_Gated(), torch.randn(2, 4))


def test_tuple_output_is_refused() -> None:
    with pytest.raises(SplitError, match="returns a tuple"):
        split_model(_Pair(), torch.randn(2, 4))


def test_second_input_is_refused_naming_it() -> None:
    with pytest.raises(SplitError, match=r"2 inputs \(x, mask\)"):
        split_model(_TwoInputs(), torch.randn(2, 4))
