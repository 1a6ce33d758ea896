"""``atomdiff index``: the unit cell of a powder pattern from its peak positions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def index(
    pattern: Annotated[Path, typer.Argument(help="Measured pattern (.xy, .xye, .dat, .csv, .xrdml).")],
    wavelength: Annotated[
        str, typer.Option(help="Wavelength: a name (CuKa1, CuKa for the Kα1+Kα2 doublet, MoKa1, ...) or Å.")
    ] = "CuKa1",
    axis: Annotated[str | None, typer.Option(help="two_theta or q (default: from the file, else two_theta).")] = None,
    lines: Annotated[int, typer.Option(min=3, help="Index the first this many peaks.")] = 20,
    triclinic_lines: Annotated[
        int,
        typer.Option(
            min=3,
            help="Search, refine and check triclinic cells on the first this many peaks (their figure of merit is "
            "still over the first --lines): more lines than cells of higher symmetry get, since six parameters "
            "fit few lines. Falls back to --lines when no triclinic cell indexes that many.",
        ),
    ] = 30,
    top: Annotated[int, typer.Option(min=1, help="Solutions to report.")] = 5,
    significance: Annotated[
        float, typer.Option(min=1.0, help="A peak stands this many standard uncertainties above the background.")
    ] = 5.0,
    max_volume: Annotated[float, typer.Option(min=1.0, help="Largest primitive-lattice cell volume searched, Å³.")] = (
        2500.0
    ),
    max_unindexed: Annotated[
        int, typer.Option(min=0, help="Lines a solution may leave unindexed (impurity or noise peaks).")
    ] = 2,
    min_merit: Annotated[
        float, typer.Option(min=0.0, help="Smallest de Wolff figure of merit M_N of a reported cell.")
    ] = 20.0,
    systems: Annotated[
        str,
        typer.Option(
            help="Crystal systems searched, comma-separated (the monoclinic search costs the most: ~10 s; the "
            "monoclinic and triclinic ones are left out when a cell of higher symmetry indexes every line well).",
        ),
    ] = "cubic,hexagonal,tetragonal,orthorhombic,monoclinic,triclinic",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder for peaks.csv and cells.csv.")] = None,
) -> None:
    """Index a powder pattern: find its peaks and the cubic to triclinic cells that explain them, ranked."""
    from atomdiff.data.patterns import read_pattern
    from atomdiff.errors import InputError
    from atomdiff.tasks.index import cell_row, index_pattern, write_cells_csv, write_peaks_csv

    measured = read_pattern(pattern, axis)
    if output is not None and output.exists() and not output.is_dir():
        raise InputError("output must be a folder, and this is a file", path=str(output))
    lam = measured.wavelength if measured.wavelength and wavelength == "CuKa1" else wavelength
    peaks, cells = index_pattern(
        measured,
        lam,
        significance=significance,
        lines=lines,
        triclinic_lines=triclinic_lines,
        top=top,
        max_volume=max_volume,
        max_unindexed=max_unindexed,
        min_merit=min_merit,
        systems=[name.strip() for name in systems.split(",") if name.strip()],
    )
    console.print(f"{len(peaks)} peaks in {pattern.name}; indexing the first {min(lines, len(peaks))}")
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        write_peaks_csv(peaks, output / "peaks.csv")
        write_cells_csv(cells, output / "cells.csv")
    if not cells:
        console.print(f"[yellow]no cell of the searched systems ({systems}) indexes these lines[/yellow]")
        return
    table = Table(title=f"unit cells for {pattern.name}")
    for col in ("rank", "system", "a, b, c (Å) [β | α, β, γ]", "V (Å³)", "zero", "M", "unindexed"):
        table.add_column(col)
    for k, cell in enumerate(cells, 1):
        row = cell_row(k, cell)
        table.add_row(
            str(k),
            f"{cell.system} {cell.centring}",
            f"{row['a']:.5f}, {row['b']:.5f}, {row['c']:.5f}"
            + (f" [{cell.angles[1]:.3f}°]" if cell.system == "monoclinic" else "")
            + (" [{:.3f}, {:.3f}, {:.3f}°]".format(*cell.angles) if cell.system == "triclinic" else ""),
            f"{cell.volume:.2f}",
            f"{cell.zero_shift:+.4f}",
            f"M{cell.lines} = {cell.m_n:.1f}",
            f"{cell.unindexed} of {cell.lines}",
        )
    console.print(table)
