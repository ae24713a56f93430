"""The fleet demo's models and their training: a teacher that copes with every viewpoint, an
eye-level student, and the distillation a board runs on its own frames.

Everything is made from the procedural world (``viewpoint``), so nothing is downloaded:

- the *teacher* (``fleet_teacher``) learns from labelled renders of the broad viewpoint mixture
  (eye level to straight down), training split, its own seed: it never sees a board's frames,
  let alone a board's evaluation frames (those are the evaluation split, see
  ``viewpoint.dataset``);
- the *eye-level student* (``fleet_student``) learns from labelled eye-level renders only, which
  is what makes it poor on the poles (the viewpoint problem the fleet then fixes);
- a *board* distils: from the round's global student, ``local_steps`` SGD steps on batches
  drawn from its own unlabelled frames, the loss the KL divergence to the teacher's softened
  predictions on the same batch (``checkpointing.execution.training.distillation_loss``, as the
  agent).

Frames are uint8 tensors ``N×3×S×S``; models take ``to_input(frames)``, floats in [0, 1] (no
mean or deviation: the first convolution is followed by batch norm). Weights are safetensors
files of the registry model's ``state_dict`` (same names), see ``save_weights``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional

from checkpointing.execution.models import FLEET_STUDENT, FLEET_TEACHER, build_model
from checkpointing.planning.budget import OPTIMIZERS, Optimizer
from viewpoint.dataset import Split, render_frames, write_frames
from viewpoint.objects import CLASSES
from viewpoint.viewpoints import BROAD, EYE_LEVEL, POLES, AnyViewpoint, by_name

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FrameSet:
    """Which frames to render: a viewpoint's split, from a seed. Sets of different splits never
    share a frame, whatever their seeds (``viewpoint.dataset``)."""

    viewpoint: str
    count: int
    seed: int
    split: Split

    def render(self, image_size: int, workers: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (uint8 ``N×3×S×S``) and labels (int64 ``N``)."""
        images, labels = render_frames(
            by_name(self.viewpoint), self.count, self.seed, self.split, image_size, workers
        )
        return images_to_tensor(images), torch.from_numpy(labels)

    def write(
        self, directory: Path | str, image_size: int, labelled: bool, workers: int = 1
    ) -> Path:
        """The set as PNG files in ``directory`` (``viewpoint.dataset.write_frames``); labelled
        sets also get ``labels.csv``, for ``viewpoint.dataset.read_labelled``."""
        return write_frames(
            directory,
            by_name(self.viewpoint),
            self.count,
            self.seed,
            labelled,
            self.split,
            image_size,
            workers,
        )


_MAX_BOARDS = 12
_POSITIVE_INTEGERS = (
    "image_size",
    "teacher_frames",
    "teacher_epochs",
    "student_frames",
    "student_epochs",
    "pretrain_batch_size",
    "frames_per_board",
    "eval_frames_per_board",
    "batch_size",
    "local_steps",
    "rounds",
)


@dataclass(frozen=True)
class DemoSettings:
    """What the fleet demo runs with; ``scripts/viewpoint_experiment.py`` measured these (numbers
    in ``docs/viewpoint.md``)."""

    image_size: int = 64
    """Side of the square frames, pixels: 64 gives the student about 1.3 MB of activations per
    sample for checkpointing to fit, while rendering stays near 2 ms a frame."""
    classes: tuple[str, ...] = CLASSES
    student: str = FLEET_STUDENT
    teacher: str = FLEET_TEACHER
    boards: tuple[str, ...] = tuple(v.name for v in POLES)
    """The boards' viewpoints (named viewpoints of ``viewpoint.viewpoints``)."""

    teacher_frames: int = 8000
    teacher_epochs: int = 3
    student_frames: int = 4000
    student_epochs: int = 3
    pretrain_batch_size: int = 64
    pretrain_learning_rate: float = 0.1

    frames_per_board: int = 2000
    """Unlabelled training frames on each board."""
    eval_frames_per_board: int = 500
    """Labelled evaluation frames of each board's viewpoint, only ever used to measure."""
    batch_size: int = 32
    temperature: float = 4.0
    learning_rate: float = 0.05
    optimizer: str = Optimizer.SGD.value
    """``checkpointing.execution.training.optimizer_for``: SGD with momentum 0.9, fresh every
    round."""
    local_steps: int = 60
    rounds: int = 5
    seed: int = 0
    """Base of every seed: model initialisation, batch order, and the frame sets' seeds."""

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTEGERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("temperature", "learning_rate", "pretrain_learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {self.image_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.classes != CLASSES:
            raise ValueError(f"classes are the world's own, {CLASSES}; got {self.classes}")
        if not 1 <= len(self.boards) <= _MAX_BOARDS:
            raise ValueError(f"between 1 and {_MAX_BOARDS} boards, got {len(self.boards)}")
        for name in self.boards:
            by_name(name)
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if self.pretrain_batch_size > min(self.teacher_frames, self.student_frames):
            raise ValueError("pretrain_batch_size exceeds the frames to pretrain on")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # Set seeds: 16 per base seed (teacher, student, then up to 12 boards), so that no two sets
    # of one split share a seed, whatever the base seed.
    def teacher_set(self) -> FrameSet:
        return FrameSet(BROAD.name, self.teacher_frames, 16 * self.seed + 1, Split.TRAIN)

    def student_set(self) -> FrameSet:
        return FrameSet(EYE_LEVEL.name, self.student_frames, 16 * self.seed + 2, Split.TRAIN)

    def eye_level_eval_set(self) -> FrameSet:
        return FrameSet(EYE_LEVEL.name, self.eval_frames_per_board, 16 * self.seed + 2, Split.EVAL)

    def board_train_set(self, board: int) -> FrameSet:
        """Board ``board``'s unlabelled frames (its labels exist but are never read)."""
        return FrameSet(
            self.boards[board], self.frames_per_board, self._board_seed(board), Split.TRAIN
        )

    def board_eval_set(self, board: int) -> FrameSet:
        return FrameSet(
            self.boards[board], self.eval_frames_per_board, self._board_seed(board), Split.EVAL
        )

    def _board_seed(self, board: int) -> int:
        if not 0 <= board < len(self.boards):
            raise ValueError(f"board must be in [0, {len(self.boards)}), got {board}")
        return 16 * self.seed + 4 + board

    def pretraining_key(self) -> str:
        """A digest of what the teacher and the eye-level student depend on, to name caches."""
        relevant = {
            k: v
            for k, v in asdict(self).items()
            if k.startswith(("teacher", "student", "pretrain", "image_size", "seed", "classes"))
        }
        # 2: the student gained its full-resolution depthwise-separable blocks.
        relevant["version"] = 2
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


DEMO = DemoSettings()


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """Images ``N×S×S×3`` uint8 (as rendered or read) as frames ``N×3×S×S`` uint8."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected N×S×S×3 uint8 images, got {images.shape} {images.dtype}")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def to_input(frames: torch.Tensor) -> torch.Tensor:
    """Frames (uint8 ``N×3×S×S``) as the models take them: float32 in [0, 1]."""
    return frames.float().div_(255.0)


def build(name: str, settings: DemoSettings = DEMO) -> nn.Module:
    """A registry model with the demo's classes, initialised from the demo's seed."""
    torch.manual_seed(settings.seed)
    return build_model(name, settings.num_classes)


def train_supervised(
    model: nn.Module,
    frames: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> None:
    """Cross-entropy training from labels: SGD with Nesterov momentum, one-cycle learning rate
    (a short run converges furthest with it), random horizontal flips (the world is mirror
    symmetric, so a flipped frame is as likely as the frame)."""
    steps_per_epoch = len(frames) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(frames)} frames cannot fill a batch of {batch_size}")
    optimizer = torch.optim.SGD(
        model.parameters(), lr=learning_rate, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(frames), generator=generator)
        for step in range(steps_per_epoch):
            picked = order[step * batch_size : (step + 1) * batch_size]
            inputs = to_input(frames[picked])
            flip = torch.rand(batch_size, generator=generator) < 0.5
            inputs = torch.where(flip[:, None, None, None], inputs.flip(3), inputs)
            loss = functional.cross_entropy(model(inputs), labels[picked])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


def _pretrain(
    name: str, frame_set: FrameSet, epochs: int, settings: DemoSettings, workers: int
) -> nn.Module:
    frames, labels = frame_set.render(settings.image_size, workers)
    model = build(name, settings)
    train_supervised(
        model,
        frames,
        labels,
        epochs,
        settings.pretrain_batch_size,
        settings.pretrain_learning_rate,
        settings.seed,
    )
    return model


def train_teacher(settings: DemoSettings = DEMO, workers: int = 1) -> nn.Module:
    """The teacher, from labelled renders of the broad mixture of viewpoints (eval mode)."""
    return _pretrain(
        settings.teacher, settings.teacher_set(), settings.teacher_epochs, settings, workers
    )


def train_eye_level_student(settings: DemoSettings = DEMO, workers: int = 1) -> nn.Module:
    """The fleet's starting student, from labelled eye-level renders only (eval mode)."""
    return _pretrain(
        settings.student, settings.student_set(), settings.student_epochs, settings, workers
    )


def predict(model: nn.Module, frames: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Logits ``N×C`` in eval mode, without grad; the model's mode is restored."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [model(to_input(frames[i : i + batch_size])) for i in range(0, len(frames), batch_size)]
        )
    model.train(was_training)
    return logits


def evaluate(model: nn.Module, frames: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy in [0, 1] of ``model`` on labelled frames."""
    if len(frames) != len(labels) or len(frames) == 0:
        raise ValueError(f"need as many labels as frames, and some: {len(frames)}, {len(labels)}")
    return float((predict(model, frames).argmax(dim=1) == labels).float().mean())


def save_weights(model: nn.Module, path: Path | str) -> Path:
    """The model's ``state_dict`` (the registry model's names) as a safetensors file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {name: value.detach().contiguous() for name, value in model.state_dict().items()}
    save_file(state, str(target))
    return target


def load_weights(name: str, path: Path | str, num_classes: int = len(CLASSES)) -> nn.Module:
    """Registry model ``name`` with the weights of a ``save_weights`` file, in eval mode."""
    model = build_model(name, num_classes)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model


@dataclass(frozen=True)
class PretrainedPaths:
    teacher: Path
    student: Path


def pretrained_paths(cache_dir: Path | str, settings: DemoSettings = DEMO) -> PretrainedPaths:
    key = settings.pretraining_key()
    folder = Path(cache_dir)
    return PretrainedPaths(
        folder / f"{settings.teacher}-{key}.safetensors",
        folder / f"{settings.student}-eye_level-{key}.safetensors",
    )


def ensure_pretrained(
    cache_dir: Path | str,
    settings: DemoSettings = DEMO,
    workers: int = 1,
    progress: Progress | None = None,
) -> PretrainedPaths:
    """The teacher's and the eye-level student's weight files, trained on the first call and
    kept in ``cache_dir`` under names that change with the settings they depend on."""
    paths = pretrained_paths(cache_dir, settings)
    say = progress or (lambda _message: None)
    if not paths.teacher.is_file():
        say("training the teacher")
        save_weights(train_teacher(settings, workers), paths.teacher)
    if not paths.student.is_file():
        say("training the eye-level student")
        save_weights(train_eye_level_student(settings, workers), paths.student)
    return paths


def board_viewpoints(settings: DemoSettings = DEMO) -> list[AnyViewpoint]:
    return [by_name(name) for name in settings.boards]
