"""A real Prometheus scrapes a real coordinator; its HTTP API returns the fleet's metrics."""

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from orchestrator.config import Address, CoordinatorConfig
from orchestrator.server import RunningServer, running
from protos.edgefleet.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc, jobs_pb2, jobs_pb2_grpc

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs Debian's prometheus package (.ci/run installs it)"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[RunningServer]:
    config = CoordinatorConfig(
        data_dir=tmp_path / "coordinator",
        enrollment_token="enroll-secret",
        admin_token="admin-secret",
        listen=Address("127.0.0.1", 0),
        metrics_port=0,
    )
    with running(config, grace_s=0.1) as server:
        yield server


@pytest.fixture
def prometheus(tmp_path: Path, coordinator: RunningServer) -> Iterator[str]:
    assert PROMETHEUS is not None
    port = _free_port()
    settings = tmp_path / "prometheus.yml"
    settings.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: edgefleet\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{coordinator.metrics_port}']\n"
    )
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={settings}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _query(base: str, expression: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        payload = json.load(response)
    assert payload["status"] == "success", payload
    result: list[dict[str, object]] = payload["data"]["result"]
    return result


def _eventually(base: str, expression: str, timeout_s: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = _query(base, expression)
            if result:
                return result
        except OSError:
            pass  # Prometheus is still starting
        if time.monotonic() > deadline:
            raise AssertionError(f"no data for {expression} within {timeout_s} s")
        time.sleep(0.5)


def test_prometheus_scrapes_nodes_jobs_and_rpcs(
    coordinator: RunningServer, prometheus: str
) -> None:
    with grpc.insecure_channel(coordinator.address) as channel:
        hardware = common_pb2.Hardware(
            ram_bytes=2 << 30,
            num_cores=8,
            cpu_model="Exynos5422",
            arch="armv7l",
            torch_version="2.9.1",
            runtime_baseline_bytes=300 << 20,
        )
        fleet_pb2_grpc.FleetServiceStub(channel).Register(
            fleet_pb2.RegisterRequest(enrollment_token="enroll-secret", hardware=hardware)
        )
        with pytest.raises(grpc.RpcError):
            fleet_pb2_grpc.FleetServiceStub(channel).Register(
                fleet_pb2.RegisterRequest(enrollment_token="wrong", hardware=hardware)
            )
        spec = jobs_pb2.JobSpec(
            student_model="mobilenet_v2",
            image_size=64,
            num_rounds=1,
            local_steps=1,
            learning_rate=0.1,
        )
        jobs_pb2_grpc.JobsServiceStub(channel).SubmitJob(
            jobs_pb2.SubmitJobRequest(spec=spec),
            metadata=[("authorization", "Bearer admin-secret")],
        )

    nodes = _eventually(prometheus, 'edgefleet_nodes{live="true"}')
    pending = _eventually(prometheus, 'edgefleet_jobs{state="pending"} > 0')
    refused = _eventually(
        prometheus, 'edgefleet_rpc_requests_total{method="Register",code="UNAUTHENTICATED"}'
    )
    latency = _eventually(
        prometheus,
        "histogram_quantile(0.99, sum by (le) (rate(edgefleet_rpc_duration_seconds_bucket[1m])))",
    )

    assert nodes[0]["metric"]["hardware_class"] == "armv7l/exynos5422/2gib"  # type: ignore[index]
    assert nodes[0]["value"][1] == "1"  # type: ignore[index]
    assert pending[0]["value"][1] == "1"  # type: ignore[index]
    assert refused[0]["value"][1] == "1"  # type: ignore[index]
    assert latency
