"""A real coordinator on 127.0.0.1:0 and a real gRPC client: registration, heartbeats, health."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from orchestrator.config import Address, CoordinatorConfig
from orchestrator.server import RunningServer, running
from protos.edgefleet.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc

ENROLL = "enroll-secret"
ADMIN = "admin-secret"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    config = CoordinatorConfig(
        data_dir=tmp_path,
        enrollment_token=ENROLL,
        admin_token=ADMIN,
        listen=Address("127.0.0.1", 0),
    )
    with running(config, grace_s=0.5) as started:
        yield started


@pytest.fixture
def fleet(server: RunningServer) -> Iterator[fleet_pb2_grpc.FleetServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield fleet_pb2_grpc.FleetServiceStub(channel)


def _hardware() -> common_pb2.Hardware:
    return common_pb2.Hardware(
        ram_bytes=1 << 30,
        num_cores=4,
        cpu_model="ARM Cortex-A53",
        arch="aarch64",
        torch_version="2.9.1",
        runtime_baseline_bytes=300 << 20,
    )


def _register(fleet: fleet_pb2_grpc.FleetServiceStub) -> fleet_pb2.RegisterResponse:
    request = fleet_pb2.RegisterRequest(enrollment_token=ENROLL, hardware=_hardware())
    response: fleet_pb2.RegisterResponse = fleet.Register(request, timeout=10)
    return response


def test_register_then_heartbeat_with_the_credential(
    fleet: fleet_pb2_grpc.FleetServiceStub,
) -> None:
    registered = _register(fleet)

    beat = fleet.Heartbeat(
        fleet_pb2.HeartbeatRequest(node_id=registered.node_id),
        metadata=[("authorization", f"Bearer {registered.node_credential}")],
        timeout=10,
    )

    assert registered.node_id
    assert len(registered.node_credential) >= 32
    assert registered.hardware_class == "aarch64/arm-cortex-a53/1gib"
    assert registered.max_chunk_bytes == 1 << 20
    assert beat.next_heartbeat_s > 0


def test_wrong_enrollment_token_is_unauthenticated(fleet: fleet_pb2_grpc.FleetServiceStub) -> None:
    request = fleet_pb2.RegisterRequest(enrollment_token="guess", hardware=_hardware())

    with pytest.raises(grpc.RpcError) as caught:
        fleet.Register(request, timeout=10)

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == "enrollment token not accepted"


@pytest.mark.parametrize("credential", ["wrong", None])
def test_heartbeat_needs_the_nodes_credential(
    fleet: fleet_pb2_grpc.FleetServiceStub, credential: str | None
) -> None:
    registered = _register(fleet)
    metadata = [] if credential is None else [("authorization", f"Bearer {credential}")]

    with pytest.raises(grpc.RpcError) as caught:
        fleet.Heartbeat(
            fleet_pb2.HeartbeatRequest(node_id=registered.node_id), metadata=metadata, timeout=10
        )

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_bad_hardware_is_invalid_argument(fleet: fleet_pb2_grpc.FleetServiceStub) -> None:
    hardware = _hardware()
    hardware.ram_bytes = 0

    with pytest.raises(grpc.RpcError) as caught:
        fleet.Register(fleet_pb2.RegisterRequest(enrollment_token=ENROLL, hardware=hardware))

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "ram_bytes" in (caught.value.details() or "")


def test_health_and_reflection(server: RunningServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(
            reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            )
        )

    names = {s.name for s in answers[0].list_services_response.service}
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert "edgefleet.v1.FleetService" in names
    assert "grpc.health.v1.Health" in names


def test_registration_survives_a_restart(tmp_path: Path) -> None:
    config = CoordinatorConfig(
        data_dir=tmp_path,
        enrollment_token=ENROLL,
        admin_token=ADMIN,
        listen=Address("127.0.0.1", 0),
    )
    with running(config, grace_s=0.1) as first, grpc.insecure_channel(first.address) as channel:
        registered = _register(fleet_pb2_grpc.FleetServiceStub(channel))

    with running(config, grace_s=0.1) as second, grpc.insecure_channel(second.address) as channel:
        beat = fleet_pb2_grpc.FleetServiceStub(channel).Heartbeat(
            fleet_pb2.HeartbeatRequest(node_id=registered.node_id),
            metadata=[("authorization", f"Bearer {registered.node_credential}")],
            timeout=10,
        )

    assert beat.next_heartbeat_s > 0


@pytest.mark.parametrize("source", ["flags", "file and environment"])
def test_serve_command_logs_its_port_and_stops_on_sigterm(tmp_path: Path, source: str) -> None:
    env = {**os.environ, "EDGEFLEET_ENROLLMENT_TOKEN": ENROLL, "EDGEFLEET_ADMIN_TOKEN": ADMIN}
    command = [sys.executable, "-m", "edgefleet.cli", "coordinator", "serve"]
    if source == "flags":
        command += ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path)]
    else:
        settings = tmp_path / "config.yaml"
        settings.write_text(f"listen: 127.0.0.1:0\ndata_dir: {tmp_path / 'data'}\nfsync: false\n")
        command += ["--config", str(settings)]
        env["EDGEFLEET_TICK_S"] = "0.25"
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = ""
        deadline = time.monotonic() + 60
        while "listening on" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
        port = int(line.rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0


def test_serve_command_rejects_short_tokens(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "edgefleet.cli", "coordinator", "serve", "--data-dir"]
    command += [str(tmp_path), "--enrollment-token", "short", "--admin-token", ADMIN]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert completed.returncode == 2
    assert "enrollment_token must be at least 8" in completed.stderr
