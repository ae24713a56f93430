"""The plan-aware arena, compiled here and preloaded into real child processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node_agent.arena import Arena, ArenaBuildError, arena_step, build_arena

_PROBE = Path(__file__).with_name("arena_probe.py")
_REPO = Path(__file__).resolve().parents[3]

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler to build the arena"
)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler to build the arena")
    return build_arena(tmp_path_factory.mktemp("arena") / "libedgefleet_arena.so")


def _probe(what: str, library: Path | None) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(_REPO), "OMP_NUM_THREADS": "1"}
    env.pop("LD_PRELOAD", None)
    if library is not None:
        env["LD_PRELOAD"] = str(library)
    completed = subprocess.run(
        [sys.executable, str(_PROBE), what],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


@needs_compiler
def test_training_under_the_arena_computes_what_glibc_computes(library: Path) -> None:
    plain = _probe("steps", None)

    planned = _probe("steps", library)

    assert planned["losses"] == plain["losses"]
    assert planned["kept_intact"] is True
    stats = planned["stats"]
    assert isinstance(stats, dict)
    assert stats["hits"] > 0
    assert stats["planned_bytes"] > 0
    # The batch changed after step 6: that step's sequence differed and a new one was recorded.
    assert stats["mismatches"] > 0
    assert stats["steps_recorded"] >= 2
    # The activation kept past step 3 held its planned range: later steps went around it.
    assert stats["overlaps"] > 0


@needs_compiler
def test_large_blocks_keep_mallocs_contract(library: Path) -> None:
    facts = _probe("blocks", library)

    assert facts == {
        "usable_at_least_size": True,
        "realloc_kept": True,
        "aligned": {"64": True, "4096": True},
    }


def test_without_the_preload_there_is_no_arena_and_steps_run_plainly() -> None:
    assert Arena.loaded() is None
    with arena_step(None):
        ran = True

    assert ran


def test_a_missing_compiler_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArenaBuildError, match="no C compiler 'no-such-cc'"):
        build_arena(tmp_path / "lib.so", compiler="no-such-cc")
