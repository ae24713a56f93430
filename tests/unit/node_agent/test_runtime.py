"""The agent's runtime, measured in fresh processes: lean imports, a baseline counted as private
memory plus the file pages it uses, and torchvision's cost measured when a model needs it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.unit.deploy.sources import ROOT

_MIB = 1 << 20

_BASELINE = """
import json, sys
import node_agent.agent
from node_agent.runtime import measure_runtime
measured = measure_runtime(threads=1)
print(json.dumps({
    "baseline": measured.runtime_baseline_bytes,
    "private": measured.rss_anon_bytes + measured.rss_shmem_bytes,
    "allowance": measured.file_allowance_bytes,
    "file": measured.rss_file_bytes,
    "modules": sorted({name.partition(".")[0] for name in sys.modules}),
}))
"""

_LIBRARY = """
import json
from node_agent.model_library import load_model_library
ours = load_model_library("small_cnn")
first = load_model_library("mobilenet_v2")
again = load_model_library("resnet18")
print(json.dumps([ours, first, again]))
"""


def _run(code: str) -> object:
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=ROOT,
    )
    return json.loads(completed.stdout.splitlines()[-1])


def test_the_baseline_is_private_memory_plus_the_file_pages_the_runtime_uses() -> None:
    measured = _run(_BASELINE)

    assert isinstance(measured, dict)
    assert measured["baseline"] == measured["private"] + measured["allowance"]
    assert 0 < measured["allowance"] <= measured["file"]
    assert not {"torchvision", "matplotlib", "numba"} & set(measured["modules"])


def test_the_file_allowance_is_steady_where_mapped_file_pages_are_not() -> None:
    first, second = _run(_BASELINE), _run(_BASELINE)

    assert isinstance(first, dict) and isinstance(second, dict)
    # Two fresh processes on a busy machine: the allowance (about 180 MB here) moved by up to
    # 8.1 MB between them; mapped file pages move by hundreds of MB between installs.
    assert abs(first["allowance"] - second["allowance"]) <= 16 * _MIB
    assert abs(first["private"] - second["private"]) <= 8 * _MIB


def test_torchvision_is_loaded_for_its_models_once_and_its_cost_measured() -> None:
    ours, first, again = _run(_LIBRARY)  # type: ignore[misc]

    assert ours == 0
    assert first > 10 * _MIB
    assert again == first
