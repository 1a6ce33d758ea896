"""``atomdiff demo``: run the bundled example end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from atomdiff.cli.options import Seed

console = Console()


def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the demo's files.")] = Path("demo_out"),
    seed: Seed = 0,
) -> None:
    """Simulate X-ray, neutron and PDF data of bundled kesterite Cu2ZnSnS4, with plots and descriptors."""
    from atomdiff.tasks.demo import run_demo

    summary = run_demo(output, seed=seed, log=console.print)
    console.print(f"[bold green]demo done[/]: {len(summary['files'])} files in {output}/")
    for name in summary["files"]:
        console.print(f"  {output / name}")
