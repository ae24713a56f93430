"""A real Prometheus (Debian's package) on 127.0.0.1, scraping one target every second."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs Debian's prometheus package (.ci/run installs it)"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_prometheus(
    folder: Path, target_port: int, rule_files: Sequence[Path] = ()
) -> Iterator[str]:
    """Prometheus scraping ``127.0.0.1:target_port`` as job "edgefleet" (as the chart's
    ServiceMonitor names it), evaluating ``rule_files`` every second; its base URL."""
    assert PROMETHEUS is not None, "use needs_prometheus"
    port = _free_port()
    settings = folder / "prometheus.yml"
    rules = "".join(f"  - {path}\n" for path in rule_files)
    settings.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        + (f"rule_files:\n{rules}" if rules else "")
        + "scrape_configs:\n  - job_name: edgefleet\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={settings}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
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
