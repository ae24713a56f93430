from pathlib import Path

import pytest

from orchestrator.aggregation import AggregationRule
from orchestrator.job_spec import JobSpec, JobSpecError

GOOD = """
student: mobilenet_v2
teacher: resnet50
image_size: 224
batch_size: largest
rounds: 10
local_steps: 20
optimizer: adam
learning_rate: 0.001
fraction_per_round: 0.5
min_nodes: 2
round_deadline_s: 600
aggregation: trimmed_mean
trim_fraction: 0.2
"""


def test_a_full_job_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(GOOD)

    spec = JobSpec.from_file(path)

    assert spec.student == "mobilenet_v2"
    assert spec.batch_size is None
    assert spec.aggregation is AggregationRule.TRIMMED_MEAN
    assert JobSpec.from_dict(spec.to_dict()) == spec


def test_defaults_for_a_minimal_job() -> None:
    spec = JobSpec.from_yaml(
        "student: small_cnn\nimage_size: 32\nrounds: 1\nlocal_steps: 1\nlearning_rate: 0.1\n"
    )

    assert spec.teacher is None
    assert spec.optimizer == "sgd"
    assert spec.aggregation is AggregationRule.FEDAVG


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("image_size: -3", "image_size: must be a positive whole number"),
        ("batch_size: many", "batch_size: must be a positive whole number"),
        ("rounds: 2.5", "rounds: must be a positive whole number"),
        ("optimizer: rmsprop", "optimizer: must be one of sgd, adam"),
        ("learning_rate: 0", "learning_rate: must be a positive number"),
        ("fraction_per_round: 1.5", r"fraction_per_round: must be in \(0, 1\]"),
        ("aggregation: mode", "aggregation: must be one of fedavg, median, trimmed_mean"),
        ("trim_fraction: 0.7", r"trim_fraction: must be in \[0, 0.5\)"),
        ("student: 'drop table'", "student: must be a model name"),
        ("colour: blue", "colour: unknown field"),
    ],
)
def test_invalid_fields_are_named(change: str, message: str) -> None:
    key = change.split(":")[0]
    lines = [line for line in GOOD.strip().splitlines() if not line.startswith(f"{key}:")]
    text = "\n".join([*lines, change])

    with pytest.raises(JobSpecError, match=message):
        JobSpec.from_yaml(text)


def test_missing_required_field_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(JobSpecError, match="student: missing"):
        JobSpec.from_yaml("image_size: 32")
    with pytest.raises(JobSpecError, match="not valid YAML"):
        JobSpec.from_yaml("student: [unclosed")
    with pytest.raises(JobSpecError, match="a job is a mapping"):
        JobSpec.from_yaml("- a list")
    with pytest.raises(JobSpecError, match="cannot read"):
        JobSpec.from_file(tmp_path / "absent.yaml")
