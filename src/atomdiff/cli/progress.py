"""Progress bars for commands with several stages (one bar per stage)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console()


@contextmanager
def stage_bars(stages: Sequence[str]) -> Iterator[Callable[[str, float, float], None]]:
    """Yields ``update(stage, completed, total)``; each stage gets its bar when it first reports."""
    bar = Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    tasks: dict[str, int] = {}
    with bar:

        def update(stage: str, completed: float, total: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=completed, total=total)

        yield update
