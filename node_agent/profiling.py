"""Profile tasks: measure a model's stages on this board, for the coordinator's memory model.

The engine profiles the model's chain (``checkpointing.execution.profile_sizes``) at every (batch
size, image size) pair the task names. For a job's student the board also measures what its
allocator holds beyond live tensors during training steps at two batch sizes, in this process: a
board has no room for a second process of its size, and this process is the one that will train. The
planner adds that overhead (a fraction of the tensor bytes plus a constant) to every plan of the
board's class; the memory guard covers what the reading misses.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass

import torch
from torch.nn import functional

from checkpointing.execution.meter import memory_meter
from checkpointing.execution.models import build_model
from checkpointing.execution.process_memory import peak_rss_bytes, reset_peak_rss, rss_bytes
from checkpointing.execution.profile import ChainProfile
from checkpointing.execution.profile_sizes import profile_samples
from checkpointing.execution.steps import unique_storage_bytes
from checkpointing.execution.training import optimizer_for
from checkpointing.planning.budget import Optimizer
from node_agent.arena import Arena, arena_step
from node_agent.model_library import load_model_library
from protos.edgefleet.v1 import fleet_pb2

_LOG = logging.getLogger(__name__)
DEFAULT_NUM_CLASSES = 1000
_CALIBRATION_STEPS = 2


@dataclass(frozen=True)
class ProfileResult:
    profiles: list[fleet_pb2.ChainProfile]
    parameter_bytes: int
    buffer_bytes: int
    num_classes: int
    allocator_overhead_fraction: float | None
    """None: not measured (the task did not ask, or gave one batch size)."""
    allocator_overhead_bytes: int
    model_library_bytes: int = 0


def to_proto(profile: ChainProfile) -> fleet_pb2.ChainProfile:
    chain = profile.chain
    return fleet_pb2.ChainProfile(
        stage_names=profile.stage_names,
        batch_size=profile.batch_size,
        image_size=profile.input_shape[-1],
        saves_output=chain.output_saved,
        fw_s=chain.fw,
        bw_s=chain.bw,
        cw_bytes=[int(v) for v in chain.cw],
        cbw_bytes=[int(v) for v in chain.cbw],
        ftmp_bytes=[int(v) for v in chain.ftmp],
        ftmp_nograd_bytes=[int(v) for v in chain.forward_nograd_tmp],
        btmp_bytes=[int(v) for v in chain.btmp],
        device=profile.device,
    )


def _overhead_at(
    model_name: str, image_size: int, num_classes: int, batch_size: int
) -> tuple[int, int]:
    """Live tensor peak and what RSS rose beyond it, over two plain training steps."""
    gc.collect()
    torch.manual_seed(0)
    # The whole RSS, file pages included: a first training step at a new shape maps kernels and
    # builds caches (JIT code, primitive caches) that later steps keep. Measured in private
    # memory alone the overhead read 0 in the demo and its boards' steps then overshot their
    # plans by 40-70 MB; the whole RSS's rise covers them.
    before = rss_bytes()
    reset_peak_rss()
    model = build_model(model_name, num_classes).train()
    params = list(model.parameters())
    optimizer = optimizer_for(Optimizer.SGD, params, lr=0.0)
    # Under the plan-aware arena the steps are its steps, as training's passes are: the first
    # is recorded, the second replays the plan, so what the plan's range holds is measured.
    arena = Arena.loaded()
    with memory_meter(torch.device("cpu")) as meter:
        meter.track(*params, *model.buffers())
        for _ in range(_CALIBRATION_STEPS):
            with arena_step(arena):
                inputs = torch.rand(batch_size, 3, image_size, image_size)
                targets = torch.randint(0, num_classes, (batch_size,))
                functional.cross_entropy(model(inputs), targets).backward()
                del inputs, targets
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)
        live = meter.peak_bytes
    overhead = peak_rss_bytes() - before - live
    del model, params, optimizer
    return live, overhead


def allocator_overhead(
    model_name: str, image_size: int, num_classes: int, batch_sizes: list[int]
) -> tuple[float | None, int]:
    """Allocator bytes beyond live tensors: a fraction of them plus a constant (both ≥ 0).

    The fraction is None when it cannot be measured (one batch size: no slope to fit).
    """
    if len(batch_sizes) < 2:
        return None, 0
    small = _overhead_at(model_name, image_size, num_classes, batch_sizes[0])
    large = _overhead_at(model_name, image_size, num_classes, batch_sizes[-1])
    (live_a, over_a), (live_b, over_b) = small, large
    fraction = (over_b - over_a) / (live_b - live_a) if live_b > live_a else 0.0
    fraction = min(max(fraction, 0.0), 0.99)
    constant = max(over_a - fraction * live_a, over_b - fraction * live_b, 0.0)
    _LOG.info("allocator overhead: %.3f of live tensors + %d bytes", fraction, int(constant))
    return fraction, int(constant)


def run_profile(task: fleet_pb2.ProfileTask) -> ProfileResult:
    num_classes = task.num_classes or DEFAULT_NUM_CLASSES
    library_bytes = load_model_library(task.model_name)
    profiles = profile_samples(
        task.model_name, list(task.batch_sizes), list(task.image_sizes), num_classes
    )
    model = build_model(task.model_name, num_classes)
    parameter_bytes = unique_storage_bytes(model.parameters())
    buffer_bytes = unique_storage_bytes(model.buffers())
    del model
    fraction: float | None = None
    constant = 0
    if task.calibrate:
        fraction, constant = allocator_overhead(
            task.model_name, max(task.image_sizes), num_classes, sorted(set(task.batch_sizes))
        )
    return ProfileResult(
        profiles=[to_proto(profile) for profile in profiles],
        parameter_bytes=parameter_bytes,
        buffer_bytes=buffer_bytes,
        num_classes=num_classes,
        allocator_overhead_fraction=fraction,
        allocator_overhead_bytes=constant,
        model_library_bytes=library_bytes,
    )
