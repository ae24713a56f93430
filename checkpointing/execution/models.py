"""Models by name: torchvision's classification models (no weights fetched), a small test net, and
the fleet demo's student and teacher.

torchvision is imported only when one of its models is asked for: importing it costs a board
about 87 MB of anonymous memory and 80 MB of mapped files on x86-64 (measured beside torch
alone), which a board training one of our own models should not carry.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

SMALL_CNN = "small_cnn"
FLEET_STUDENT = "fleet_student"
FLEET_TEACHER = "fleet_teacher"


class UnknownModelError(ValueError):
    """A model name that is neither a torchvision classification model nor one of ours."""


def small_cnn(num_classes: int = 10, width: int = 16) -> nn.Sequential:
    """A few conv stages with BatchNorm, in-place ReLU and dropout: cheap, yet has every pitfall."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]

    return nn.Sequential(
        *block(3, width),
        *block(width, width),
        nn.MaxPool2d(2),
        *block(width, 2 * width),
        nn.Dropout2d(0.1),
        *block(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(2 * width, num_classes),
    )


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def _depthwise_separable(channels: int) -> list[nn.Module]:
    """MobileNet's block: a 3×3 depthwise convolution, then a 1×1 pointwise one, each with
    BatchNorm and ReLU."""
    return [
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    ]


def fleet_student(
    num_classes: int = 6, width: int = 16, full_resolution_blocks: int = 4
) -> nn.Sequential:
    """The fleet demo's student, shaped like the students camera boards train (MobileNet's):
    depthwise-separable blocks at the frame's full resolution, whose activations are large
    (``width`` channels of 64×64, about 1.3 MB per block per sample at the demo's size) and
    cheap to compute. A board's memory, not its arithmetic, bounds the batch, and recomputing a
    block costs little: the network checkpointing is for. The blocks also widen the receptive
    field before the first pooling. The last feature map is pooled to 4×4, not 1×1: the object
    is near the centre, and where each part of it lies (a head above shoulders, a crown above a
    trunk) is the cue that makes a small net learn a viewpoint in a few hundred steps."""
    blocks = [layer for _ in range(full_resolution_blocks) for layer in _depthwise_separable(width)]
    return nn.Sequential(
        *_conv_bn_relu(3, width),
        *blocks,
        nn.MaxPool2d(2),
        *_conv_bn_relu(width, 2 * width),
        nn.MaxPool2d(2),
        *_conv_bn_relu(2 * width, 4 * width),
        nn.MaxPool2d(2),
        *_conv_bn_relu(4 * width, 4 * width),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(4 * width * 16, num_classes),
    )


def fleet_teacher(num_classes: int = 6, width: int = 32) -> nn.Sequential:
    """The fleet demo's teacher: about four times the student's parameters and accurate from
    every viewpoint; it only labels frames on a board, so its stride-2 stem keeps its
    inference (and its own training) about as cheap as the student's training."""
    return nn.Sequential(
        *_conv_bn_relu(3, width, stride=2),
        *_conv_bn_relu(width, width),
        nn.MaxPool2d(2),
        *_conv_bn_relu(width, 2 * width),
        nn.MaxPool2d(2),
        *_conv_bn_relu(2 * width, 4 * width),
        *_conv_bn_relu(4 * width, 4 * width),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(4 * width * 16, num_classes),
    )


_OURS: dict[str, Callable[[int], nn.Module]] = {
    SMALL_CNN: small_cnn,
    FLEET_STUDENT: fleet_student,
    FLEET_TEACHER: fleet_teacher,
}


def classification_models() -> list[str]:
    """Every name ``build_model`` accepts."""
    import torchvision

    return sorted([*_OURS, *torchvision.models.list_models(module=torchvision.models)])


def is_torchvision_model(name: str) -> bool:
    """Whether building ``name`` needs torchvision (any name not ours: torchvision decides)."""
    return name not in _OURS


def check_model_name(name: str) -> None:
    """``UnknownModelError`` naming the known models, unless ``build_model`` accepts ``name``."""
    if name in _OURS:
        return
    known = classification_models()
    if name not in known:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(known)}")


def build_model(name: str, num_classes: int = 1000) -> nn.Module:
    """A freshly initialised model (weights come from local files, never from a hub)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    check_model_name(name)
    if name in _OURS:
        return _OURS[name](num_classes)
    import torchvision

    model: nn.Module = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return model


def cross_entropy_loss(targets: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss the benchmarks and the demo train with, closed over a batch's targets."""

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, targets)

    return loss
