"""Progress reporting on stderr, so that stdout stays machine-readable."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

Report = Callable[[str, int, int], None]
"""``report(what, done, total)``."""


@contextmanager
def stderr_progress() -> Iterator[Report]:
    """Yield ``report(what, done, total)``; each new ``what`` starts a new bar."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                for other in tasks.values():
                    task = progress.tasks[other]
                    progress.update(other, completed=task.total)
                tasks[what] = progress.add_task(what, total=total)
            progress.update(tasks[what], completed=done, total=total)

        yield report
        for task_id in tasks.values():
            progress.update(task_id, completed=progress.tasks[task_id].total)
