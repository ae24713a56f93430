"""TLS and mutual TLS on a real coordinator, with certificates made by openssl for the test."""

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from edgefleet.cli import app
from orchestrator.config import Address, CoordinatorConfig
from orchestrator.server import running

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*arguments: str) -> None:
    subprocess.run(["openssl", *arguments], check=True, capture_output=True, timeout=60)


def _signed(directory: Path, name: str, subject: str, ca: Path, ca_key: Path) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    extensions = directory / f"{name}.ext"
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-subj",
        subject,
        "-out",
        str(csr),
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(extensions),
        "-out",
        str(cert),
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-subj",
        "/CN=edgefleet test CA",
        "-days",
        "2",
        "-out",
        str(ca),
    )
    server_cert, server_key = _signed(directory, "server", "/CN=localhost", ca, ca_key)
    client_cert, client_key = _signed(directory, "client", "/CN=board-1", ca, ca_key)
    return Pki(ca, server_cert, server_key, client_cert, client_key)


def _config(tmp_path: Path, pki: Pki, mutual: bool) -> CoordinatorConfig:
    return CoordinatorConfig(
        data_dir=tmp_path,
        enrollment_token="enroll-secret",
        admin_token="admin-secret",
        listen=Address("127.0.0.1", 0),
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        client_ca=pki.ca if mutual else None,
    )


def _check(port: int, credentials: grpc.ChannelCredentials) -> int:
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return int(response.status)


def test_tls_serves_clients_that_trust_the_ca(tmp_path: Path, pki: Pki) -> None:
    with running(_config(tmp_path, pki, mutual=False), grace_s=0.1) as server:
        trusted = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())

        status = _check(server.port, trusted)

        assert status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError), grpc.insecure_channel(server.address) as plain:
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_mutual_tls_requires_a_client_certificate(tmp_path: Path, pki: Pki) -> None:
    with running(_config(tmp_path, pki, mutual=True), grace_s=0.1) as server:
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.read_bytes(),
            private_key=pki.client_key.read_bytes(),
            certificate_chain=pki.client_cert.read_bytes(),
        )
        without_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())

        assert _check(server.port, with_cert) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError):
            _check(server.port, without_cert)


def test_operators_commands_speak_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    with running(_config(tmp_path, pki, mutual=True), grace_s=0.1) as server:
        common = ["--coordinator", f"localhost:{server.port}", "--admin-token", "admin-secret"]
        tls = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert)]
        tls += ["--tls-key", str(pki.client_key)]

        listed = CliRunner().invoke(app, ["jobs", "list", *common, *tls, "--json"])
        half = CliRunner().invoke(app, ["nodes", "list", *common, "--tls-ca", str(pki.ca)])

    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []
    assert half.exit_code != 0
    assert "Traceback" not in half.output
