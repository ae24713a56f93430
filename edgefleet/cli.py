"""The ``edgefleet`` command: one entry point, a sub-command per area.

Sub-commands import their heavy dependencies (torch) lazily, so that ``edgefleet plan`` and the
coordinator's commands run without torch installed.
"""

from __future__ import annotations

import typer

from edgefleet.commands import agent, bench, coordinator, demo, jobs, plan, showcase

app = typer.Typer(
    name="edgefleet",
    help="Fleet training orchestrator for memory-limited edge boards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(plan.app, name="plan")
bench.app.command("showcase")(showcase.showcase)
app.add_typer(bench.app, name="bench")
app.add_typer(coordinator.app, name="coordinator")
app.add_typer(jobs.app, name="jobs")
app.add_typer(jobs.nodes_app, name="nodes")
app.add_typer(agent.app, name="agent")
app.command("demo")(demo.demo)


if __name__ == "__main__":
    app()
