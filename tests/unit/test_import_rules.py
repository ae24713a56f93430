"""Which room may import which (docs/architecture.md, "Rooms and their imports").

Dependencies point one way: the protocol and the engine know no role; the coordinator and the
agent know the protocol and the engine, never each other or the CLI; the CLI (``edgefleet``)
may use them all. Every import in every module counts, the lazy ones inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("checkpointing", "edgefleet", "node_agent", "orchestrator", "protos", "viewpoint")
ALLOWED: dict[str, set[str]] = {
    "protos": {"protos"},
    "viewpoint": {"viewpoint"},
    "checkpointing": {"checkpointing"},
    "orchestrator": {"orchestrator", "checkpointing", "protos"},
    "node_agent": {"node_agent", "checkpointing", "protos"},
    "edgefleet": set(OURS),
}
KNOWN_EXCEPTIONS = {
    # The benchmark harness still lives in the engine's package; it moves out of it with the
    # engine's split into rooms (issue 13, step 2), and this line goes with it.
    ("edgefleet/harness/train_child.py", "edgefleet"),
}


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, dotted, wherever in it the import stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imported_modules(path)} & set(OURS)


def _violations(package: str) -> list[str]:
    broken = []
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        broken += [
            f"{relative} imports {imported}"
            for imported in sorted(_imported_packages(path) - ALLOWED[package])
        ]
    return broken


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_room_imports_only_what_it_may(package: str) -> None:
    assert _violations(package) == []


def test_the_planning_half_of_the_engine_imports_neither_torch_nor_the_execution_half() -> None:
    broken = [
        f"{path.relative_to(ROOT).as_posix()} imports {name}"
        for path in sorted((ROOT / "checkpointing" / "planning").rglob("*.py"))
        for name in sorted(_imported_modules(path))
        if name.split(".")[0] == "torch" or name.startswith("checkpointing.execution")
    ]

    assert broken == []


def test_the_check_sees_a_lazy_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text(
        "def f():\n    from edgefleet.cli import app\n    import orchestrator.server\n"
    )

    assert _imported_packages(module) == {"edgefleet", "orchestrator"}
