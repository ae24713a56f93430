"""Per-stage memory and time models: a chain predicted for any batch and image size (no torch).

Each quantity of each stage (see ``checkpointing.planning.chain``) is fitted by least squares on
profiles taken at a few small batch sizes and image sizes, as

    q(B, S) = intercept + per_sample * B + per_sample_pixel * B * S**2

with ``B`` the batch size and ``S`` the side of a square image. Activations and tapes scale with
the pixels of every sample; what follows global pooling scales with the samples only; what a
stage holds whatever the batch (parameter-gradient temporaries) is the intercept.

The fitted coefficients are a plain, versioned object that round-trips through JSON, so that the
coordinator can keep one per hardware class and model and plan without torch and without running
anything at the new size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeGuard

import numpy as np

from checkpointing.planning.chain import Chain

MEMORY_MODEL_VERSION = 1
QUANTITIES = ("fw", "bw", "cw", "cbw", "ftmp", "ftmp_nograd", "btmp")
TIME_QUANTITIES = ("fw", "bw")
"""In seconds; every other quantity is in bytes, and predicted sizes are rounded up."""

Coefficients = tuple[float, float, float]
"""``(intercept, per_sample, per_sample_pixel)``."""

# Entries per quantity, beyond the number of stages: the loss is stage ``L`` of these.
_EXTRA_ENTRIES = {"fw": 0, "bw": 1, "cw": 1, "cbw": 1, "ftmp": 0, "ftmp_nograd": 0, "btmp": 1}
# A fitted size of 1024.0000000003 bytes is 1024 bytes, not 1025.
_ROUNDING_DECIMALS = 3


class MemoryModelError(ValueError):
    """Samples that cannot be fitted, or a stored memory model that cannot be read."""


@dataclass(frozen=True)
class MemoryModel:
    """Fitted per-stage coefficients of one model; ``predict`` gives its chain at any size."""

    model: str
    stage_names: tuple[str, ...]
    saves_output: tuple[bool, ...]
    coefficients: Mapping[str, tuple[Coefficients, ...]]
    """Per quantity, per entry (stage, or the loss last where the chain has one)."""
    samples: tuple[tuple[int, int], ...]
    """``(batch_size, image_size)`` of the profiles fitted on."""
    parameter_bytes: int
    """Bytes of the model's parameters (for the whole-process terms)."""
    buffer_bytes: int
    """Bytes of the model's buffers (batch-norm statistics)."""
    num_classes: int = 1000
    """Outputs of the classifier the profiles were taken with (it sizes the last stages)."""
    version: int = MEMORY_MODEL_VERSION
    _arrays: Mapping[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.version != MEMORY_MODEL_VERSION:
            raise MemoryModelError(
                f"memory model version {self.version} is not supported "
                f"(this code reads version {MEMORY_MODEL_VERSION}); fit it again"
            )
        length = len(self.stage_names)
        if length < 1:
            raise MemoryModelError("a memory model needs at least one stage")
        if len(self.saves_output) != length:
            raise MemoryModelError(
                f"{len(self.saves_output)} 'saves_output' flags for {length} stages"
            )
        if set(self.coefficients) != set(QUANTITIES):
            raise MemoryModelError(
                f"coefficients must be given for exactly {', '.join(QUANTITIES)}; "
                f"got {', '.join(sorted(self.coefficients))}"
            )
        arrays: dict[str, np.ndarray] = {}
        for quantity in QUANTITIES:
            array = np.asarray(self.coefficients[quantity], dtype=np.float64)
            entries = length + _EXTRA_ENTRIES[quantity]
            if array.shape != (entries, 3):
                raise MemoryModelError(
                    f"'{quantity}' needs {entries} triples (intercept, per_sample, "
                    f"per_sample_pixel) for {length} stages, got shape {array.shape}"
                )
            if not np.all(np.isfinite(array)):
                raise MemoryModelError(f"'{quantity}' has a coefficient that is not finite")
            arrays[quantity] = array
        for name in ("parameter_bytes", "buffer_bytes"):
            if getattr(self, name) < 0:
                raise MemoryModelError(f"'{name}' must not be negative")
        if self.num_classes < 1:
            raise MemoryModelError(f"'num_classes' must be at least 1, got {self.num_classes}")
        object.__setattr__(self, "_arrays", arrays)

    @property
    def length(self) -> int:
        """Number of stages, the loss excluded."""
        return len(self.stage_names)

    def predict(self, batch_size: int, image_size: int) -> Chain:
        """The chain at ``batch_size`` images of ``image_size``² pixels (bytes, seconds)."""
        for name, value in (("batch_size", batch_size), ("image_size", image_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MemoryModelError(f"'{name}' must be a positive integer, got {value!r}")
        features = np.array(_features(batch_size, image_size))
        values: dict[str, np.ndarray] = {}
        for quantity in QUANTITIES:
            # A quantity that extrapolates below zero holds nothing, it cannot give memory back.
            predicted = np.maximum(self._arrays[quantity] @ features, 0.0)
            if quantity not in TIME_QUANTITIES:
                predicted = np.ceil(np.round(predicted, _ROUNDING_DECIMALS))
            values[quantity] = predicted
        # Rounding and the clamp act on each quantity alone; the chain needs a tape that does not
        # save its output to hold at least that output.
        cw, cbw = values["cw"], values["cbw"]
        released = np.array([False, *(not saves for saves in self.saves_output)])
        cbw[released] = np.maximum(cbw[released], cw[released])
        return Chain(
            fw=tuple(float(v) for v in values["fw"]),
            bw=tuple(float(v) for v in values["bw"]),
            cw=tuple(float(v) for v in cw),
            cbw=tuple(float(v) for v in cbw),
            ftmp=tuple(float(v) for v in values["ftmp"]),
            ftmp_nograd=tuple(float(v) for v in values["ftmp_nograd"]),
            btmp=tuple(float(v) for v in values["btmp"]),
            saves_output=self.saves_output,
        )

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types only."""
        return {
            "version": self.version,
            "model": self.model,
            "stage_names": list(self.stage_names),
            "saves_output": list(self.saves_output),
            "coefficients": {
                quantity: [list(triple) for triple in self._arrays[quantity].tolist()]
                for quantity in QUANTITIES
            },
            "samples": [list(sample) for sample in self.samples],
            "parameter_bytes": self.parameter_bytes,
            "buffer_bytes": self.buffer_bytes,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> MemoryModel:
        if not isinstance(data, Mapping):
            raise MemoryModelError(
                f"a memory model must be a JSON object, got {type(data).__name__}"
            )
        keys = (
            "version",
            "model",
            "stage_names",
            "saves_output",
            "coefficients",
            "samples",
            "parameter_bytes",
            "buffer_bytes",
            "num_classes",
        )
        missing = [key for key in keys if key not in data]
        if missing:
            raise MemoryModelError(f"missing key(s): {', '.join(missing)}")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise MemoryModelError(f"unknown key(s): {', '.join(unknown)}")
        version = data["version"]
        if version != MEMORY_MODEL_VERSION:
            raise MemoryModelError(
                f"memory model version {version!r} is not supported "
                f"(this code reads version {MEMORY_MODEL_VERSION}); fit it again"
            )
        model = data["model"]
        if not isinstance(model, str):
            raise MemoryModelError(f"'model' must be a string, got {model!r}")
        names = data["stage_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise MemoryModelError(f"'stage_names' must be a list of strings, got {names!r}")
        flags = data["saves_output"]
        if not isinstance(flags, list) or not all(isinstance(f, bool) for f in flags):
            raise MemoryModelError(f"'saves_output' must be a list of booleans, got {flags!r}")
        return cls(
            model=model,
            stage_names=tuple(names),
            saves_output=tuple(flags),
            coefficients=_coefficients_from_json(data["coefficients"]),
            samples=_samples_from_json(data["samples"]),
            parameter_bytes=_count("parameter_bytes", data["parameter_bytes"]),
            buffer_bytes=_count("buffer_bytes", data["buffer_bytes"]),
            num_classes=_count("num_classes", data["num_classes"]),
        )


def fit_memory_model(
    model: str,
    samples: Sequence[tuple[int, int, Chain]],
    stage_names: Sequence[str],
    parameter_bytes: int,
    buffer_bytes: int,
    num_classes: int = 1000,
) -> MemoryModel:
    """Fit every quantity of every stage on ``(batch_size, image_size, chain)`` samples.

    The samples need the same stages, with the same ``saves_output`` flags, and at least two
    batch sizes and two image sizes that together determine the three coefficients.
    """
    if not samples:
        raise MemoryModelError("no samples to fit on")
    length = len(stage_names)
    first = samples[0][2]
    for batch_size, image_size, chain in samples:
        where = f"the sample at batch {batch_size}, image size {image_size}"
        if chain.length != length:
            raise MemoryModelError(
                f"{where} has {chain.length} stages, expected {length} (one per stage name)"
            )
        for j, (saves, expected) in enumerate(
            zip(chain.output_saved, first.output_saved, strict=True)
        ):
            if saves != expected:
                raise MemoryModelError(
                    f"stage {j} ({stage_names[j]}): {where} has saves_output={saves}, "
                    f"the first sample {expected}; the stage's tape differs between sizes"
                )
    batch_sizes = {batch for batch, _, _ in samples}
    image_sizes = {size for _, size, _ in samples}
    if len(batch_sizes) < 2 or len(image_sizes) < 2:
        raise MemoryModelError(
            f"need at least 2 batch sizes and 2 image sizes, got batch sizes "
            f"{sorted(batch_sizes)} and image sizes {sorted(image_sizes)}"
        )
    design = np.array([_features(batch, size) for batch, size, _ in samples])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise MemoryModelError(
            "the samples' (batch size, image size) pairs do not determine an intercept, a "
            "per-sample and a per-pixel term; sample two batch sizes at one image size"
        )
    # Columns span six orders of magnitude (1 to B·S²); scaling them keeps lstsq exact.
    scale = np.abs(design).max(axis=0)
    coefficients: dict[str, tuple[Coefficients, ...]] = {}
    for quantity in QUANTITIES:
        targets = np.array(
            [_quantity(chain, quantity) for _, _, chain in samples], dtype=np.float64
        )
        solution, *_ = np.linalg.lstsq(design / scale, targets, rcond=None)
        fitted = solution / scale[:, None]
        coefficients[quantity] = tuple(
            (float(a), float(b), float(c)) for a, b, c in fitted.T.tolist()
        )
    return MemoryModel(
        model=model,
        stage_names=tuple(stage_names),
        saves_output=first.output_saved,
        coefficients=coefficients,
        samples=tuple((batch, size) for batch, size, _ in samples),
        parameter_bytes=parameter_bytes,
        buffer_bytes=buffer_bytes,
        num_classes=num_classes,
    )


def _features(batch_size: int, image_size: int) -> tuple[float, float, float]:
    return (1.0, float(batch_size), float(batch_size) * float(image_size) ** 2)


def _quantity(chain: Chain, quantity: str) -> tuple[float, ...]:
    if quantity == "ftmp_nograd":
        return chain.forward_nograd_tmp
    values: tuple[float, ...] = getattr(chain, quantity)
    return values


def _coefficients_from_json(value: object) -> dict[str, tuple[Coefficients, ...]]:
    if not isinstance(value, Mapping):
        raise MemoryModelError(f"'coefficients' must be an object, got {type(value).__name__}")
    out: dict[str, tuple[Coefficients, ...]] = {}
    for quantity, rows in value.items():
        if not isinstance(rows, list):
            raise MemoryModelError(f"'coefficients.{quantity}' must be a list of triples")
        triples: list[Coefficients] = []
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != 3 or not all(_is_number(v) for v in row):
                raise MemoryModelError(
                    f"'coefficients.{quantity}[{index}]' must be three numbers, got {row!r}"
                )
            triples.append((float(row[0]), float(row[1]), float(row[2])))
        out[str(quantity)] = tuple(triples)
    return out


def _samples_from_json(value: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list):
        raise MemoryModelError(f"'samples' must be a list of [batch, image size], got {value!r}")
    out: list[tuple[int, int]] = []
    for sample in value:
        if (
            not isinstance(sample, list)
            or len(sample) != 2
            or not all(_is_int(v) and v > 0 for v in sample)
        ):
            raise MemoryModelError(f"'samples' entries must be [batch, image size], got {sample!r}")
        out.append((sample[0], sample[1]))
    return tuple(out)


def _count(name: str, value: object) -> int:
    if not _is_int(value) or value < 0:
        raise MemoryModelError(f"'{name}' must be a non-negative integer, got {value!r}")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
