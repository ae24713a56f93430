from __future__ import annotations

import gc

import torch
from torch import nn
from torch.distributed._tools.mem_tracker import MemTracker

from checkpointing.execution.accountant import LiveTensorAccountant

FLOAT_BYTES = 4


def _small_conv_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def test_new_tensor_counts_its_bytes_and_a_view_counts_nothing() -> None:
    accountant = LiveTensorAccountant()

    with accountant:
        base = torch.empty(1000, dtype=torch.uint8)
        after_alloc = accountant.live_bytes
        view = base.view(10, 100)
        after_view = accountant.live_bytes
        other = torch.ones(250)
        after_other = accountant.live_bytes

    assert after_alloc == 1000
    assert after_view == 1000
    assert after_other == 1000 + 250 * FLOAT_BYTES
    del view, other, base


def test_storage_is_released_when_its_last_alias_dies() -> None:
    accountant = LiveTensorAccountant()
    with accountant:
        base = torch.empty(1000, dtype=torch.uint8)
        view = base[10:20]

    del base
    with_view_only = accountant.live_bytes
    del view
    with_nothing = accountant.live_bytes

    assert with_view_only == 1000
    assert with_nothing == 0


def test_peak_keeps_the_maximum_and_reset_brings_it_down_to_live() -> None:
    accountant = LiveTensorAccountant()
    with accountant:
        big = torch.empty(4000, dtype=torch.uint8)
        small = torch.empty(100, dtype=torch.uint8)
        del big
        peak_after_free = accountant.peak_bytes
        accountant.reset_peak()
        peak_after_reset = accountant.peak_bytes
        medium = torch.empty(500, dtype=torch.uint8)
        peak_after_medium = accountant.peak_bytes

    assert peak_after_free == 4100
    assert peak_after_reset == 100
    assert peak_after_medium == 600
    del small, medium


def test_track_counts_tensors_made_before_the_mode_once() -> None:
    made_before = torch.empty(300, dtype=torch.uint8)
    accountant = LiveTensorAccountant()

    accountant.track(made_before, made_before[5:], made_before.view(3, 100))
    with accountant:
        alias = made_before.view(30, 10)
    tracked = accountant.live_bytes
    del made_before, alias
    released = accountant.live_bytes

    assert tracked == 300
    assert released == 0


def test_views_of_untracked_tensors_are_not_new_memory() -> None:
    weight = torch.randn(64, 32)
    accountant = LiveTensorAccountant()

    with accountant:
        transposed = weight.t()
        detached = weight.detach()

    assert accountant.live_bytes == 0
    del transposed, detached


def test_growth_by_resize_and_out_arguments_is_counted() -> None:
    accountant = LiveTensorAccountant()
    source = torch.ones(100)
    accountant.track(source)

    with accountant:
        grown = torch.empty(0)
        grown.resize_(50)
        after_resize = accountant.live_bytes
        out = torch.empty(0)
        torch.add(source, source, out=out)
        after_out = accountant.live_bytes

    assert after_resize == (100 + 50) * FLOAT_BYTES
    assert after_out == (100 + 50 + 100) * FLOAT_BYTES
    del grown, out


def test_frees_during_backward_are_seen() -> None:
    n = 10_000
    x = torch.randn(n, requires_grad=True)
    accountant = LiveTensorAccountant()
    accountant.track(x)
    live_in_hook: list[int] = []
    x.register_hook(lambda grad: live_in_hook.append(accountant.live_bytes))

    with accountant:
        # Each exp saves its own result for the backward, which releases it after use.
        loss = x.exp().exp().sum()
        before_backward = accountant.live_bytes
        loss.backward()
        del loss
    after = accountant.live_bytes

    tensor_bytes = n * FLOAT_BYTES
    assert before_backward >= 3 * tensor_bytes
    # When x's gradient arrives both saved results are gone: x and its gradient remain.
    assert live_in_hook[0] <= 2 * tensor_bytes + 64
    assert accountant.peak_bytes >= 4 * tensor_bytes
    assert after == 2 * tensor_bytes


def test_conv_net_step_peak_agrees_with_torch_memtracker() -> None:
    torch.manual_seed(0)
    net = _small_conv_net()
    for param in net.parameters():
        param.grad = torch.zeros_like(param)
    images = torch.randn(4, 3, 32, 32)
    targets = torch.randint(0, 10, (4,))
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    model_tensors = [*net.parameters(), *grads, *net.buffers()]

    tracker = MemTracker()
    tracker.track_external(net, images)
    with tracker:
        nn.functional.cross_entropy(net(images), targets).backward()
    reference_peak = sum(snap["Total"] for snap in tracker.get_tracker_snapshot("peak").values())
    del tracker
    gc.collect()

    accountant = LiveTensorAccountant()
    accountant.track(images, *model_tensors)
    start = accountant.live_bytes
    with accountant:
        nn.functional.cross_entropy(net(images), targets).backward()

    assert accountant.peak_bytes == reference_peak
    assert accountant.peak_bytes > start
    assert accountant.live_bytes == start
