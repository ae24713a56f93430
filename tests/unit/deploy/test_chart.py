"""helm/edgefleet: linted and rendered with Helm's Go SDK (helm_python), validated against the
Kubernetes schemas, and its values mapped onto `edgefleet coordinator serve`."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from orchestrator.config import CoordinatorConfig
from orchestrator.config_sources import ENV_PREFIX, load_config
from tests.unit.deploy.sources import ALERTS, CHART, DASHBOARD

# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion: native gRPC probes are GA
# from 1.27) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
# Kinds of the Prometheus Operator: not in Kubernetes' schemas, checked on their own below.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
POSTGRES_URL = "postgresql+psycopg://edgefleet:s3cret@postgres.db:5432/edgefleet"
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "tls": {"tls": {"enabled": True, "secretName": "edgefleet-tls", "mutual": True}},
    "postgresql": {"database": {"url": POSTGRES_URL}, "config": {"selectionSeed": 7}},
    "existing-secret": {
        "auth": {"existingSecret": "fleet-tokens"},
        "database": {"existingSecret": "fleet-db", "urlKey": "dsn"},
    },
    "prometheus-operator": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "grafanaDashboard": {"enabled": True},
    },
}


@pytest.fixture(scope="module", autouse=True)
def _quiet_helm() -> None:
    helm.disable_logging()


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name="fleet", namespace="edge", is_install=True)
    return [
        document
        for name, text in sorted(rendered.items())
        if not name.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document
    ]


def _one(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def _container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    pod = _one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container_spec: dict[str, Any] = container
    return container_spec


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["name"]: variable for variable in container["env"]}


def _config_file(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The coordinator's config file as the chart renders it."""
    config_map = _one(manifests, "ConfigMap", "fleet-edgefleet-config")
    data: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return data


def _environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables, a secret's reference standing in for its value."""
    return {
        name: variable.get("value", f"from {variable.get('valueFrom')}")
        for name, variable in _env(container).items()
    }


def _loaded(manifests: list[dict[str, Any]], tmp_path: Path) -> CoordinatorConfig:
    """What the coordinator makes of the rendered file and environment (the real loader)."""
    path = tmp_path / "config.yaml"
    path.write_text(_one(manifests, "ConfigMap", "fleet-edgefleet-config")["data"]["config.yaml"])
    return load_config(path, _environment(_container(manifests)), {})


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_lints_without_warnings(variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace="edge")

    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_validates_against_the_kubernetes_schemas(variant: str) -> None:
    manifests = _render(VARIANTS[variant])

    checked = 0
    for manifest in manifests:
        if manifest["kind"] in OPERATOR_KINDS:
            continue
        for version in KUBE_VERSIONS:
            # strict: no field the schema does not know (a typo is an error, not ignored).
            kubernetes_validate.validate(manifest, version, strict=True)
        checked += 1

    kinds = {m["kind"] for m in manifests}
    expected = {"StatefulSet", "Service", "ServiceAccount"}
    if variant != "existing-secret":
        expected.add("Secret")
    assert expected <= kinds
    assert checked == len([m for m in manifests if m["kind"] not in OPERATOR_KINDS]) > 3


def test_default_values_run_one_non_root_coordinator_with_persistent_data() -> None:
    manifests = _render({})

    statefulset = _one(manifests, "StatefulSet")
    container = _container(manifests)
    pod = statefulset["spec"]["template"]["spec"]
    assert statefulset["spec"]["replicas"] == 1
    assert container["command"] == ["edgefleet", "coordinator", "serve"]
    assert container["args"] == ["--config=/etc/edgefleet/config/config.yaml"]
    assert _config_file(manifests) == {
        "listen": "0.0.0.0:50051",
        "data_dir": "/var/lib/edgefleet",
        "metrics_port": 9090,
        "chunk_bytes": 1048576,
        "heartbeat_timeout_s": 60,
        "idle_pull_interval_s": 5,
        "profile_timeout_s": 600,
        "ram_fraction": 0.85,
        "default_overhead_fraction": 0.5,
        "tick_s": 0.5,
        "fsync": True,
        "handler_threads": 128,
        "upload_concurrency": 4,
        "http2_bdp_probe": False,
    }
    assert {
        "name": "config",
        "mountPath": "/etc/edgefleet/config",
        "readOnly": True,
    } in container["volumeMounts"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/var/lib/edgefleet"} in container["volumeMounts"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]["memory"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"] == {"port": 50051}  # the standard health service
    services = {s["metadata"]["name"]: s for s in manifests if s["kind"] == "Service"}
    assert services["fleet-edgefleet"]["spec"]["ports"][0]["targetPort"] == "grpc"
    assert services["fleet-edgefleet-metrics"]["spec"]["ports"][0]["targetPort"] == "metrics"
    assert statefulset["spec"]["serviceName"] == "fleet-edgefleet-headless"
    assert not OPERATOR_KINDS & {m["kind"] for m in manifests}
    assert [m["metadata"]["name"] for m in manifests if m["kind"] == "ConfigMap"] == [
        "fleet-edgefleet-config"
    ]


def test_tokens_come_from_the_charts_secret_made_valid_for_the_coordinator() -> None:
    manifests = _render({})

    env = _env(_container(manifests))
    secret = _one(manifests, "Secret", "fleet-edgefleet-auth")
    tokens = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    enrollment = env["EDGEFLEET_ENROLLMENT_TOKEN"]["valueFrom"]["secretKeyRef"]
    admin = env["EDGEFLEET_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert enrollment == {"name": "fleet-edgefleet-auth", "key": "enrollment-token"}
    assert admin == {"name": "fleet-edgefleet-auth", "key": "admin-token"}
    # CoordinatorConfig accepts them (8 characters at least, different).
    CoordinatorConfig(
        data_dir=Path("/var/lib/edgefleet"),
        enrollment_token=tokens["enrollment-token"],
        admin_token=tokens["admin-token"],
    )


def test_given_tokens_are_kept() -> None:
    values = {"auth": {"enrollmentToken": "enroll-0123", "adminToken": "admin-0123"}}

    secret = _one(_render(values), "Secret", "fleet-edgefleet-auth")

    assert base64.b64decode(secret["data"]["enrollment-token"]) == b"enroll-0123"
    assert base64.b64decode(secret["data"]["admin-token"]) == b"admin-0123"


def test_tls_mounts_the_secret_and_probes_over_tcp() -> None:
    manifests = _render(VARIANTS["tls"])

    container = _container(manifests)
    pod = _one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    settings = _config_file(manifests)
    assert settings["tls_cert"] == "/etc/edgefleet/tls/tls.crt"
    assert settings["tls_key"] == "/etc/edgefleet/tls/tls.key"
    assert settings["client_ca"] == "/etc/edgefleet/client-ca/ca.crt"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "edgefleet-tls"
    assert volumes["client-ca"]["secret"]["secretName"] == "edgefleet-tls"
    # Kubernetes' gRPC probes cannot speak TLS.
    for probe in ("livenessProbe", "readinessProbe"):
        assert "grpc" not in container[probe]
        assert container[probe]["tcpSocket"] == {"port": "grpc"}


def test_postgresql_url_travels_in_a_secret_never_in_the_pod_spec() -> None:
    manifests = _render(VARIANTS["postgresql"])

    container = _container(manifests)
    secret = _one(manifests, "Secret", "fleet-edgefleet-database")
    assert "db_url" not in _config_file(manifests)
    assert not any("EDGEFLEET_DB_URL" in argument for argument in container["args"])
    reference = _env(container)["EDGEFLEET_DB_URL"]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": "fleet-edgefleet-database", "key": "url"}
    assert base64.b64decode(secret["data"]["url"]).decode() == POSTGRES_URL
    assert "s3cret" not in json.dumps(_one(manifests, "StatefulSet"))


def test_existing_secrets_are_used_and_none_is_made() -> None:
    manifests = _render(VARIANTS["existing-secret"])

    env = _env(_container(manifests))
    assert [m for m in manifests if m["kind"] == "Secret"] == []
    assert env["EDGEFLEET_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "fleet-tokens"
    assert env["EDGEFLEET_DB_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleet-db",
        "key": "dsn",
    }


def test_prometheus_operator_objects_carry_the_one_source_rules_and_dashboard() -> None:
    manifests = _render(VARIANTS["prometheus-operator"])

    monitor = _one(manifests, "ServiceMonitor")
    rule = _one(manifests, "PrometheusRule")
    dashboard = _one(manifests, "ConfigMap", "fleet-edgefleet-dashboard")
    metrics_service = _one(manifests, "Service", "fleet-edgefleet-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics_service["metadata"]["labels"].items()
    grpc_service = _one(manifests, "Service", "fleet-edgefleet")
    assert not selector.items() <= grpc_service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == metrics_service["spec"]["ports"][0]["name"]
    # The job label the rules select: the metrics Service's app.kubernetes.io/name.
    assert metrics_service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "edgefleet"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["edgefleet.json"]) == json.loads(DASHBOARD.read_text())


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="needs promtool from Debian's prometheus package (.ci/run installs it)",
)
def test_rendered_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    rule = _one(_render(VARIANTS["prometheus-operator"]), "PrometheusRule")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))

    result = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - {"tls"}))
def test_the_coordinator_loads_what_the_chart_renders(variant: str, tmp_path: Path) -> None:
    manifests = _render(VARIANTS[variant])

    config = _loaded(manifests, tmp_path)

    assert str(config.listen) == "0.0.0.0:50051"
    assert config.data_dir == Path("/var/lib/edgefleet")
    assert config.enrollment_token.startswith("from ")  # a secret's reference, not a value
    assert (config.db_url is not None) == (variant in ("postgresql", "existing-secret"))
    assert config.selection_seed == (7 if variant == "postgresql" else None)


def test_the_coordinator_reads_the_tls_files_where_the_chart_mounts_them(tmp_path: Path) -> None:
    manifests = _render(VARIANTS["tls"])

    # The files are the pod's secrets, absent here: the loader got as far as checking them.
    with pytest.raises(ValueError, match=r"tls_cert: no such file /etc/edgefleet/tls/tls\.crt"):
        _loaded(manifests, tmp_path)


def test_every_setting_has_one_place_in_the_chart() -> None:
    fields = {field.name for field in dataclasses.fields(CoordinatorConfig)}
    set_by_chart: set[str] = set()
    for variant in VARIANTS.values():
        manifests = _render(variant)
        set_by_chart |= set(_config_file(manifests))
        set_by_chart |= {
            name.removeprefix(ENV_PREFIX).lower()
            for name in _env(_container(manifests))
            if name.removeprefix(ENV_PREFIX).lower() in fields
        }

    assert set_by_chart == fields


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"config": {"listen": {"port": "fifty"}}}, "/config/listen/port"),
        ({"config": {"metricsPort": 70000}}, "/config/metricsPort"),
        ({"auth": {"adminToken": "short"}}, "/auth/adminToken"),
        ({"tls": {"enabled": True}}, "/tls/secretName"),
        ({"persistence": {"size": "lots"}}, "/persistence/size"),
        ({"replicaCount": 3}, "replicaCount"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], complaint: str) -> None:
    chart = helm.Chart.load(CHART)

    with pytest.raises(helm.HelmValuesError) as rejected:
        chart.render(values, name="fleet", namespace="edge")

    assert complaint in str(rejected.value)


# Values whose defaults are whole objects, documented as one row each.
_DOCUMENTED_WHOLE = {
    "resources",
    "podSecurityContext",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "grafanaDashboard.labels",
}


def _keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        name = prefix + key
        if isinstance(value, dict) and value and name not in _DOCUMENTED_WHOLE:
            yield from _keys(value, name + ".")
        else:
            yield name


def test_readme_values_table_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text().partition("## Values")[2]

    documented = set(re.findall(r"^\| `([A-Za-z0-9.]+)` \|", readme, re.MULTILINE))

    assert documented == set(_keys(values))
