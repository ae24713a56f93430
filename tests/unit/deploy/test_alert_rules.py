"""deploy/prometheus/alerts.yaml: promtool-valid, a passing unit test per alert, real names."""

import shutil
import subprocess

import pytest
import yaml

from tests.unit.deploy.sources import (
    ALERT_TESTS,
    ALERTS,
    alert_expressions,
    alert_rules,
    exported_series_names,
    metric_names,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool from Debian's prometheus package (.ci/run installs it)"
)
EXPECTED_ALERTS = {
    "EdgefleetCoordinatorDown",
    "EdgefleetNodesLost",
    "EdgefleetRoundStalled",
    "EdgefleetRoundPastDeadline",
    "EdgefleetRepeatedOutOfMemory",
    "EdgefleetUpdateRejectionRateHigh",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", str(ALERTS))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@needs_promtool
def test_every_alert_has_a_passing_promtool_unit_test() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    tested = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]  # a test that shows the alert firing, not only quiet
    }

    result = _promtool("test", "rules", str(ALERT_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr
    assert tested == set(alert_expressions()) == EXPECTED_ALERTS


def test_rules_read_only_series_the_coordinator_exports() -> None:
    exported = exported_series_names() | {"up"}

    read = {
        name for expression in alert_expressions().values() for name in metric_names(expression)
    }

    assert read - exported == set()
    assert "edgefleet_node_failures_total" in read  # the parse found the names


def test_every_alert_has_severity_summary_and_description() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
