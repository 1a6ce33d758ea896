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
    quick: Annotated[bool, typer.Option(help="Only the simulations (skip phase analysis and solving).")] = False,
) -> None:
    """Simulate X-ray, neutron and PDF data of kesterite Cu2ZnSnS4; find the phases of a kesterite sample with
    5 wt% SnS; solve SrTiO3 from its pattern (a few minutes on 2 cores; --quick skips the last two)."""
    from atomdiff.tasks.demo import run_demo

    summary = run_demo(output, seed=seed, log=console.print, full=not quick)
    console.print(f"[bold green]demo done[/]: {len(summary['files'])} files in {output}/")
    for name in summary["files"]:
        console.print(f"  {output / name}")
    if not quick:
        names = ("phases", "solve", "solve_kesterite")
        reports = [output / name / "report.html" for name in names] + [summary["amorphous"]["report"]]
        console.print("reports: " + ", ".join(str(r) for r in reports))
