"""The wheel, installed the way deploy/docker/coordinator.Dockerfile installs it, serves.

Builds the project's wheel from the checkout, installs it with the coordinator Dockerfile's extras
into a fresh virtual environment (dependencies from pip's index and cache), and runs
``edgefleet coordinator serve`` from there: no torch in that environment, and the standard gRPC
health check answers SERVING.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.unit.deploy.sources import ROOT, dockerfile_extras

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None, reason="needs git to list the checkout's files"
)
_LISTENING = re.compile(r"coordinator listening on (\S+):(\d+)")
_METRICS = re.compile(r"^metrics on (\S+):(\d+)")


def _run(*args: str | Path, timeout_s: float = 600) -> str:
    result = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _copy_checkout(destination: Path) -> None:
    """The files git would ship (tracked, and new ones not ignored): no .venv, no build dirs."""
    listing = _run(
        "git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"
    )
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)


@pytest.fixture(scope="module")
def coordinator_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and the coordinator Dockerfile's extras."""
    work = tmp_path_factory.mktemp("packaging")
    _copy_checkout(work / "source")
    _run(
        sys.executable, "-m", "build", "--wheel", "--no-isolation",
        "--outdir", work / "dist", work / "source",
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("edgefleet-*.whl")
    _run(sys.executable, "-m", "venv", work / "venv")
    extras = ",".join(sorted(dockerfile_extras("coordinator")))
    _run(
        work / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile",
        f"{wheel}[{extras}]",
    )  # fmt: skip
    return work / "venv"


def _lines(stream: object) -> Iterator[str]:
    yield from iter(stream.readline, "")  # type: ignore[attr-defined]


def _read_into(stream: object, lines: queue.Queue[str]) -> None:
    for line in _lines(stream):
        lines.put(line)


def _wait_for(lines: queue.Queue[str], pattern: re.Pattern[str], seen: list[str]) -> re.Match[str]:
    while True:
        try:
            line = lines.get(timeout=90)
        except queue.Empty:
            raise AssertionError(f"no line matching {pattern.pattern}:\n{''.join(seen)}") from None
        seen.append(line)
        match = pattern.search(line)
        if match:
            return match


def test_coordinator_environment_has_no_torch(coordinator_env: Path) -> None:
    python = coordinator_env / "bin" / "python"

    probe = (
        "import importlib.util as u; print([m for m in ('torch', 'torchvision') if u.find_spec(m)])"
    )
    missing = _run(python, "-c", probe)
    installed = _run(python, "-m", "pip", "list", "--format=freeze")

    assert missing.strip() == "[]"
    assert re.search(r"^edgefleet==", installed, re.MULTILINE)
    assert re.search(r"^grpcio==", installed, re.MULTILINE)
    assert not re.search(r"^torch", installed, re.MULTILINE)


def test_installed_coordinator_serves_and_answers_the_health_check(
    coordinator_env: Path, tmp_path: Path
) -> None:
    environment = dict(
        os.environ,
        EDGEFLEET_ENROLLMENT_TOKEN="enroll-packaged",
        EDGEFLEET_ADMIN_TOKEN="admin-packaged",
    )
    process = subprocess.Popen(
        [
            str(coordinator_env / "bin" / "edgefleet"), "coordinator", "serve",
            "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
            "--metrics-port", "0",
        ],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=environment,
        cwd=tmp_path,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_into, args=(process.stderr, lines), daemon=True).start()
    seen: list[str] = []
    try:
        listening = _wait_for(lines, _LISTENING, seen)
        metrics = _wait_for(lines, _METRICS, seen)
        address = f"{listening.group(1)}:{listening.group(2)}"
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        metrics_url = f"http://{metrics.group(1)}:{metrics.group(2)}/metrics"
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            exposition = response.read().decode()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert "edgefleet_jobs" in exposition
    assert exit_code == 0, "".join(seen)
    assert (tmp_path / "data" / "registry.sqlite3").is_file()
