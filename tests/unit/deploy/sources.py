"""The deployment files the tests read, and the PromQL they carry.

The alert rules and the dashboard are each one file (the chart links to them); these helpers
read them the way Prometheus and Grafana do, so the unit tests (names, promtool) and the
integration test (a real Prometheus) check the same expressions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import yaml

from orchestrator.metrics import FleetMetrics
from orchestrator.storage import Storage

ROOT = Path(__file__).resolve().parents[3]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
DASHBOARD = ROOT / "deploy" / "grafana" / "edgefleet.json"
CHART = ROOT / "helm" / "edgefleet"
DOCKERFILES = ROOT / "deploy" / "docker"

# What Grafana puts in for the dashboard's variables when every option is chosen.
_GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    '"$hardware_class"': '".*"',
}
_METRIC = re.compile(r"\b(edgefleet_[a-z_]+|up)\b")


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alert_expressions() -> dict[str, str]:
    """Alert name → its PromQL expression."""
    return {rule["alert"]: str(rule["expr"]) for rule in alert_rules()}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(panels: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_expressions() -> dict[str, str]:
    """``panel title / refId`` → its PromQL with Grafana's variables filled in."""
    found: dict[str, str] = {}
    for panel in _panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            expression = str(target["expr"])
            for variable, value in _GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            found[f"{panel['title']} / {target['refId']}"] = expression
    return found


def metric_names(expression: str) -> set[str]:
    """The series names an expression reads (``up`` and ``edgefleet_*``)."""
    return set(_METRIC.findall(expression))


class _NoFleet:
    """Storage with nothing in it: enough for the collector to describe its families."""

    def list_nodes(self, *, hardware_class: str | None = None) -> list[object]:
        return []

    def list_jobs(self, *, status: object | None = None) -> list[object]:
        return []

    def list_node_plans(self, *args: object, **kwargs: object) -> list[object]:
        return []


def exported_families() -> dict[str, set[str]]:
    """Each metric family of the coordinator's endpoint → the series names it carries."""
    metrics = FleetMetrics(cast(Storage, _NoFleet()), heartbeat_timeout_s=60)
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
    }
    return {
        family.name: {family.name + suffix for suffix in suffixes[family.type]}
        for family in metrics.registry.collect()
    }


def exported_series_names() -> set[str]:
    """Every series name the coordinator's metrics endpoint can carry, from its registry."""
    return set().union(*exported_families().values())


_INSTALLED_EXTRAS = re.compile(r'"\$\{wheel\}\[([a-z,]+)\]"')


def dockerfile_extras(name: str) -> set[str]:
    """The extras a Dockerfile under deploy/docker installs the project's wheel with."""
    text = (DOCKERFILES / f"{name}.Dockerfile").read_text()
    (extras,) = _INSTALLED_EXTRAS.findall(text)
    return set(extras.split(","))
