"""The solvers and the simulator must not import torch: the coordinator plans without it."""

import subprocess
import sys


def test_pure_side_imports_no_torch() -> None:
    code = (
        "import sys, checkpointing.planning.solvers.persistent;"
        "import checkpointing.planning.solvers.revolve, checkpointing.planning.planner;"
        "import edgefleet.cli;"
        "import orchestrator.server, orchestrator.aggregation, orchestrator.job_spec;"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert completed.returncode == 0, completed.stderr
