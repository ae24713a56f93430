"""Profiles of a real model at several batch and image sizes, and the memory model fitted on them.

What a board runs when the coordinator asks it to profile (``node_agent.profiling``) and what the
memory-model benchmark fits on. Nothing here imports the solvers: a board's process stays free
of numba (about 130 MB resident).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from checkpointing.execution.models import build_model, cross_entropy_loss
from checkpointing.execution.profile import ChainProfile, ProfileConfig, profile_stages
from checkpointing.execution.split import Stage, split_model
from checkpointing.execution.steps import LossFn, unique_storage_bytes
from checkpointing.planning.memory_model import MemoryModel, fit_memory_model

DEFAULT_BATCH_SIZES = (1, 2, 4)
DEFAULT_IMAGE_SIZES = (64, 128)
FAST_PROFILE = ProfileConfig(repeats=3)

Progress = Callable[[str, int, int], None]


class SamplingError(ValueError):
    """Sizes that cannot be sampled, or a model whose stages differ between image sizes."""


def profile_samples(
    model_name: str,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    image_sizes: Sequence[int] = DEFAULT_IMAGE_SIZES,
    num_classes: int = 1000,
    seed: int = 0,
    *,
    config: ProfileConfig = FAST_PROFILE,
    device: str = "cpu",
    progress: Progress | None = None,
) -> list[ChainProfile]:
    """Profiles of ``model_name`` at every batch size for every image size (image-major)."""
    model = training_model(model_name, num_classes, seed, torch.device(device))
    return _profiles(model, batch_sizes, image_sizes, num_classes, seed, config, progress)


def fit_model(
    model_name: str,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    image_sizes: Sequence[int] = DEFAULT_IMAGE_SIZES,
    num_classes: int = 1000,
    seed: int = 0,
    *,
    config: ProfileConfig = FAST_PROFILE,
    device: str = "cpu",
    progress: Progress | None = None,
) -> MemoryModel:
    """Profile ``model_name`` at the given sizes and fit its memory model."""
    model = training_model(model_name, num_classes, seed, torch.device(device))
    profiles = _profiles(model, batch_sizes, image_sizes, num_classes, seed, config, progress)
    return fit_memory_model(
        model_name,
        [(p.batch_size, p.input_shape[-1], p.chain) for p in profiles],
        profiles[0].stage_names,
        parameter_bytes=unique_storage_bytes(model.parameters()),
        buffer_bytes=unique_storage_bytes(model.buffers()),
        num_classes=num_classes,
    )


def check_sizes(batch_sizes: Sequence[int], image_sizes: Sequence[int]) -> None:
    if not batch_sizes or not image_sizes:
        raise SamplingError("give at least one batch size and one image size")
    for name, values, least in (("batch size", batch_sizes, 1), ("image size", image_sizes, 8)):
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SamplingError(f"every {name} must be an integer ≥ {least}, got {value!r}")


def training_model(name: str, num_classes: int, seed: int, device: torch.device) -> nn.Module:
    """The model in train mode with its gradient buffers allocated, as a step starts."""
    torch.manual_seed(seed)
    model = build_model(name, num_classes).to(device).train()
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    return model


def sample_batch(
    batch_size: int, image_size: int, num_classes: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, LossFn]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    targets = torch.randint(0, num_classes, (batch_size,), generator=generator)
    return images.to(device), cross_entropy_loss(targets.to(device))


def split_stages(
    model: nn.Module, inputs: torch.Tensor, expected: Sequence[str] | None, image_size: int
) -> list[Stage]:
    stages = split_model(model, inputs)
    if expected is None:
        return stages
    names = [stage.name for stage in stages]
    for j, (name, wanted) in enumerate(zip(names, expected, strict=False)):
        if name != wanted:
            raise SamplingError(
                f"at image size {image_size}, stage {j} is {name!r} where the other sizes have "
                f"{wanted!r}; the model splits differently at different sizes"
            )
    if len(names) != len(expected):
        raise SamplingError(
            f"at image size {image_size} the model splits into {len(names)} stages where the "
            f"other sizes have {len(expected)}"
        )
    return stages


def _profiles(
    model: nn.Module,
    batch_sizes: Sequence[int],
    image_sizes: Sequence[int],
    num_classes: int,
    seed: int,
    config: ProfileConfig,
    progress: Progress | None,
) -> list[ChainProfile]:
    check_sizes(batch_sizes, image_sizes)
    report = progress or (lambda _what, _done, _total: None)
    device = next(model.parameters()).device
    profiles: list[ChainProfile] = []
    names: tuple[str, ...] | None = None
    total = len(batch_sizes) * len(image_sizes)
    for image_size in image_sizes:
        stages: list[Stage] | None = None
        for batch_size in batch_sizes:
            report("profiling", len(profiles), total)
            inputs, loss_fn = sample_batch(batch_size, image_size, num_classes, seed, device)
            if stages is None:
                stages = split_stages(model, inputs, names, image_size)
                names = tuple(stage.name for stage in stages)
            profiles.append(
                profile_stages([s.module for s in stages], inputs, loss_fn, config, names)
            )
    report("profiling", total, total)
    return profiles
