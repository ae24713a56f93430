"""The world must not import torch: the coordinator side and data tools render without it."""

import subprocess
import sys


def test_the_world_imports_no_torch() -> None:
    code = (
        "import sys, viewpoint, viewpoint.dataset, viewpoint.raster;"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert completed.returncode == 0, completed.stderr
