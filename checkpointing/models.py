"""Models by name: torchvision's classification models (no weights fetched) and a small test net."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

SMALL_CNN = "small_cnn"


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


def classification_models() -> list[str]:
    """Every name ``build_model`` accepts."""
    return sorted([SMALL_CNN, *torchvision.models.list_models(module=torchvision.models)])


def check_model_name(name: str) -> None:
    """``UnknownModelError`` naming the known models, unless ``build_model`` accepts ``name``."""
    known = classification_models()
    if name not in known:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(known)}")


def build_model(name: str, num_classes: int = 1000) -> nn.Module:
    """A freshly initialised model (weights come from local files, never from a hub)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    check_model_name(name)
    if name == SMALL_CNN:
        return small_cnn(num_classes)
    model: nn.Module = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return model


def cross_entropy_loss(targets: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss the benchmarks and the demo train with, closed over a batch's targets."""

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, targets)

    return loss
