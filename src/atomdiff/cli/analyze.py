"""``atomdiff analyze``: structure descriptors as a table, JSON and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from atomdiff.cli.options import StructurePath, check_output_suffix
from atomdiff.files import atomic_path
from atomdiff.structure.io import read_structure

console = Console()


def analyze(
    structure: StructurePath,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the descriptors as JSON here.")] = None,
    plots: Annotated[Path | None, typer.Option("--plots", help="Folder for RDF and bond-angle PNG plots.")] = None,
    cutoff: Annotated[
        float | None, typer.Option(help="Bond cutoff in Å (default: 1.85 for C–C, else 1.2 × covalent radii).")
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Unused (analysis is deterministic); accepted for uniformity.")
    ] = 0,
) -> None:
    """Density, shortest distance, coordination, sp/sp2/sp3 fractions (carbon), RDF and bond angles."""
    from atomdiff.tasks.analyze import analyze_structure

    if json_out is not None:
        check_output_suffix(json_out, (".json",), "--json")
    s = read_structure(structure)
    result = analyze_structure(s, cutoff=cutoff, plot_dir=plots)
    table = Table(title=f"{structure.name}: {s.formula}", show_header=True)
    table.add_column("descriptor")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.4f}"
        table.add_row(key, str(value))
    console.print(table)
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {json_out}")
    if plots is not None:
        console.print(f"wrote plots to {plots}/")
