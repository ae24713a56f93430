"""The packaging extras: what each role's process imports is installed by its extra.

The slow, real check (a wheel installed with the coordinator extra into a fresh virtual
environment, serving) is tests/integration/deploy/test_packaging.py; this one runs each role's
imports in a process that can see only the distributions its extra pulls in, so an import that
the extra forgot fails here in seconds, for the agent (torch) as for the coordinator.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.unit.deploy.sources import ROOT, dockerfile_extras

TORCH = {"torch", "torchvision"}


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _project_requirements(extras: set[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in sorted(extras):
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def _closure(extras: set[str]) -> set[str]:
    """Every distribution that installing the project with ``extras`` brings (from this
    environment's metadata, which has them all), the project included."""
    found = {"edgefleet"}
    pending = _project_requirements(extras)
    while pending:
        requirement = pending.pop()
        name = _name(requirement.name)
        if name in found:
            continue
        found.add(name)
        for line in importlib.metadata.requires(requirement.name) or []:
            dependency = Requirement(line)
            wanted = ["", *sorted(requirement.extras)]
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in wanted
            ):
                pending.append(dependency)
    return found


# Runs in a fresh interpreter: modules of distributions outside the closure cannot be found,
# as if not installed; then the role's modules are imported.
_PROBE = textwrap.dedent(
    """
    import importlib, importlib.machinery, importlib.metadata, json, pkgutil, sys
    allowed = set(json.loads(sys.argv[1]))
    packages = json.loads(sys.argv[2])
    blocked = {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if not {d.lower().replace("_", "-").replace(".", "-") for d in dists} & allowed
    }

    class InstalledOnly(importlib.machinery.PathFinder):
        # sys.path finder, blind to the blocked distributions modules

        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.partition(".")[0] in blocked:
                return None
            return super().find_spec(name, path, target)

    sys.meta_path[:] = [
        InstalledOnly if finder is importlib.machinery.PathFinder else finder
        for finder in sys.meta_path
    ]
    for package in packages:
        importlib.import_module(package)
        module = sys.modules[package]
        for info in pkgutil.walk_packages(module.__path__, package + "."):
            if ".migrations" not in info.name:  # Alembic runs those as scripts
                importlib.import_module(info.name)
    import edgefleet.cli
    print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
    """
)


def _import_as_installed(extras: set[str], packages: list[str]) -> set[str]:
    allowed = sorted(_closure(extras))
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(allowed), json.dumps(packages)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    modules: set[str] = set(json.loads(result.stdout.splitlines()[-1]))
    return modules


def test_dockerfiles_install_exactly_the_role_extras() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    coordinator = dockerfile_extras("coordinator")
    agent = dockerfile_extras("agent")

    assert coordinator == {"coordinator"}
    assert agent == {"agent"}
    assert coordinator | agent <= set(extras)


def test_coordinator_extra_brings_no_torch() -> None:
    closure = _closure(dockerfile_extras("coordinator"))

    assert closure & TORCH == set()
    assert {"grpcio", "sqlalchemy", "prometheus-client"} <= closure


def test_agent_extra_brings_torch() -> None:
    closure = _closure(dockerfile_extras("agent"))

    assert closure >= TORCH


def test_coordinator_imports_only_what_its_extra_installs() -> None:
    modules = _import_as_installed(dockerfile_extras("coordinator"), ["orchestrator"])

    assert "orchestrator" in modules
    assert modules & TORCH == set()


def test_agent_imports_only_what_its_extra_installs() -> None:
    modules = _import_as_installed(dockerfile_extras("agent"), ["node_agent"])

    assert {"node_agent", "torch"} <= modules
    assert "sqlalchemy" not in modules  # the coordinator's registry stays off the board
    # A board loads torchvision only for a torchvision model, never plots, never solves.
    assert modules & {"torchvision", "matplotlib", "numba", "llvmlite"} == set()


def _agent_requirements_on(machine: str) -> dict[str, str]:
    """The agent extra's torch and torchvision requirements as pip evaluates them on a board
    whose ``platform_machine`` is ``machine`` (Linux, CPython 3.11)."""
    environment = {"platform_machine": machine, "sys_platform": "linux", "extra": "agent"}
    found = {}
    for requirement in _project_requirements({"agent"}):
        if requirement.marker is None or requirement.marker.evaluate(environment):
            found[_name(requirement.name)] = str(requirement.specifier)
    return found


def test_aarch64_boards_get_the_newest_torch_that_runs_on_raspberry_pi_cores() -> None:
    wanted = _agent_requirements_on("aarch64")

    assert wanted["torch"] == "==2.9.1"
    assert wanted["torchvision"] == "==0.24.1"


def test_x86_64_keeps_a_range_and_32_bit_arm_gets_no_torch() -> None:
    x86 = _agent_requirements_on("x86_64")
    armv7 = _agent_requirements_on("armv7l")

    assert x86["torch"].startswith(">=") and "torchvision" in x86
    assert TORCH & set(armv7) == set()
    assert {"grpcio", "protobuf", "safetensors"} <= set(armv7)


def test_numba_is_the_coordinators_and_plots_are_the_benchmarks() -> None:
    base = {_name(r.name) for r in _project_requirements(set())}
    coordinator = {_name(r.name) for r in _project_requirements({"coordinator"})}
    agent = {_name(r.name) for r in _project_requirements({"agent"})}

    assert "numba" not in base and "numba" in coordinator
    assert "numba" not in agent and "matplotlib" not in agent


def _exec_form(dockerfile: str, instruction: str) -> list[str]:
    text = (ROOT / "deploy" / "docker" / f"{dockerfile}.Dockerfile").read_text()
    (line,) = re.findall(rf"^{instruction} (\[.*\])$", text, re.MULTILINE)
    words: list[str] = json.loads(line)
    return words


@pytest.mark.parametrize("dockerfile", ["coordinator", "agent"])
def test_dockerfile_entrypoint_and_arguments_are_edgefleet_options(dockerfile: str) -> None:
    from typer.testing import CliRunner

    from edgefleet.cli import app

    command = _exec_form(dockerfile, "ENTRYPOINT")
    arguments = _exec_form(dockerfile, "CMD") if dockerfile == "coordinator" else []
    options = {word for word in command + arguments if word.startswith("--")}

    help_text = CliRunner().invoke(app, [*command[1:], "--help"], terminal_width=200).output

    assert command[0] == "edgefleet"
    assert options and all(option in help_text for option in options), help_text
