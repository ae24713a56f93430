"""A training job as an operator writes it (YAML), validated field by field.

Example::

    name: pole-cameras-v1      # optional
    student: mobilenet_v2
    teacher: resnet50          # optional: no teacher trains on labelled frames
    image_size: 224
    batch_size: largest        # or a number
    rounds: 10
    local_steps: 20
    optimizer: sgd             # sgd | adam
    learning_rate: 0.01
    fraction_per_round: 0.5    # of the registered nodes, each round
    min_nodes: 2
    round_deadline_s: 600
    aggregation: fedavg        # fedavg | median | trimmed_mean
    trim_fraction: 0.1         # trimmed_mean only
    temperature: 2.0           # distillation softmax temperature
    num_classes: 1000          # width of the models' last layer
    initial_weights: student.safetensors   # starting weights, relative to this file

``initial_weights`` is a file for ``edgefleet jobs submit`` to upload (``load_job_file``); the job
the coordinator records names the uploaded file by its SHA-256 (``initial_weights_sha256_hex``).

An invalid file gets a ``JobSpecError`` naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from checkpointing.planning.budget import OPTIMIZERS, Optimizer
from orchestrator.aggregation import AggregationRule

LARGEST = "largest"
_MODEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_DIGEST = re.compile(r"[0-9a-f]{64}")
INITIAL_WEIGHTS = "initial_weights"


class JobSpecError(ValueError):
    """A job file that cannot be used; the message names the field."""


@dataclass(frozen=True)
class JobSpec:
    student: str
    image_size: int
    rounds: int
    local_steps: int
    learning_rate: float
    teacher: str | None = None
    name: str = ""
    """For people; the coordinator identifies a job by its id."""
    batch_size: int | None = None
    """None: the largest batch that fits each board."""
    optimizer: str = Optimizer.SGD.value
    fraction_per_round: float = 1.0
    min_nodes: int = 1
    round_deadline_s: float = 600.0
    aggregation: AggregationRule = AggregationRule.FEDAVG
    trim_fraction: float = 0.1
    temperature: float = 2.0
    initial_weights_sha256_hex: str = ""
    """The student's starting weights in the coordinator's model store; required to run."""
    num_classes: int = 1000
    """Width of the student's and teacher's last layer."""

    def __post_init__(self) -> None:
        for name in ("student", "teacher"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _MODEL_NAME.match(value)):
                raise JobSpecError(f"{name}: must be a model name like mobilenet_v2, got {value!r}")
        if not isinstance(self.name, str) or len(self.name) > 200:
            raise JobSpecError("name: must be text of at most 200 characters")
        _positive_int("image_size", self.image_size)
        _positive_int("rounds", self.rounds)
        _positive_int("local_steps", self.local_steps)
        _positive_int("min_nodes", self.min_nodes)
        _positive_int("num_classes", self.num_classes)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        _positive_number("learning_rate", self.learning_rate)
        _positive_number("round_deadline_s", self.round_deadline_s)
        _positive_number("temperature", self.temperature)
        _positive_number("fraction_per_round", self.fraction_per_round)
        if self.fraction_per_round > 1:
            raise JobSpecError(
                f"fraction_per_round: must be in (0, 1], got {self.fraction_per_round}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise JobSpecError(
                f"optimizer: must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not isinstance(self.initial_weights_sha256_hex, str) or (
            self.initial_weights_sha256_hex
            and not _DIGEST.fullmatch(self.initial_weights_sha256_hex)
        ):
            raise JobSpecError(
                "initial_weights_sha256_hex: must be 64 lowercase hex digits, got "
                f"{self.initial_weights_sha256_hex!r}"
            )
        if not isinstance(self.trim_fraction, int | float) or not 0 <= self.trim_fraction < 0.5:
            raise JobSpecError(f"trim_fraction: must be in [0, 0.5), got {self.trim_fraction!r}")

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["aggregation"] = self.aggregation.value
        data["batch_size"] = LARGEST if self.batch_size is None else self.batch_size
        return data

    @classmethod
    def from_stored(cls, spec_json: str) -> JobSpec:
        """A spec as the registry stores it (``to_dict`` as JSON)."""
        return cls.from_dict(json.loads(spec_json))

    @classmethod
    def from_dict(cls, data: object) -> JobSpec:
        if not isinstance(data, Mapping):
            raise JobSpecError(f"a job is a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise JobSpecError(f"{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
        values = dict(data)
        for required in ("student", "image_size", "rounds", "local_steps", "learning_rate"):
            if required not in values:
                raise JobSpecError(f"{required}: missing")
        batch = values.get("batch_size", LARGEST)
        values["batch_size"] = None if batch == LARGEST else batch
        aggregation = values.get("aggregation", AggregationRule.FEDAVG.value)
        try:
            values["aggregation"] = AggregationRule(aggregation)
        except ValueError:
            choices = ", ".join(rule.value for rule in AggregationRule)
            raise JobSpecError(
                f"aggregation: must be one of {choices}, got {aggregation!r}"
            ) from None
        return cls(**values)

    @classmethod
    def from_yaml(cls, text: str) -> JobSpec:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise JobSpecError(f"not valid YAML: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: Path) -> JobSpec:
        try:
            text = path.read_text()
        except OSError as exc:
            raise JobSpecError(f"cannot read {path}: {exc.strerror}") from exc
        return cls.from_yaml(text)


def load_job_file(path: Path) -> tuple[JobSpec, Path | None]:
    """The job in ``path`` and the initial weights file it names (relative to ``path``), if any."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise JobSpecError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobSpecError(f"not valid YAML: {exc}") from exc
    weights: Path | None = None
    if isinstance(data, dict) and INITIAL_WEIGHTS in data:
        named = data.pop(INITIAL_WEIGHTS)
        if not isinstance(named, str) or not named:
            raise JobSpecError(f"{INITIAL_WEIGHTS}: must be a file name, got {named!r}")
        weights = path.parent / named
        if not weights.is_file():
            raise JobSpecError(f"{INITIAL_WEIGHTS}: no such file {weights}")
    return JobSpec.from_dict(data), weights


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise JobSpecError(f"{name}: must be a positive whole number, got {value!r}")


def _positive_number(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise JobSpecError(f"{name}: must be a positive number, got {value!r}")
