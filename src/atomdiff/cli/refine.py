"""``atomdiff refine``: Rietveld refinement of given structures against a measured pattern."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from atomdiff.cli.options import Neutron, PatternAxis, Seed, Texture, Wavelength, parse_texture
from atomdiff.cli.progress import stage_bars

console = Console()


def refine(
    pattern: Annotated[Path, typer.Argument(help="Measured pattern (.xy, .xye, .dat, .csv, .xrdml).")],
    structures: Annotated[
        list[Path], typer.Argument(help="Structures to refine: CIF, POSCAR, extxyz (every frame of a file).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (CIFs, refined.csv, fit plots).")],
    neutron: Neutron = False,
    wavelength: Wavelength = "CuKa1",
    axis: PatternAxis = None,
    symprec: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Refine each structure in the space group spglib finds within this tolerance (Å); 0 refines in P1.",
        ),
    ] = 0.01,
    texture: Texture = None,
    seed: Seed = 0,
) -> None:
    """Refine structures against a powder pattern (Rietveld: lattice, zero shift, profile, B per element,
    coordinates — in each structure's space group), rank them by Rwp and compare them by ΔAIC."""
    from atomdiff.data.patterns import read_pattern
    from atomdiff.structure.io import read_structures
    from atomdiff.tasks.refine import refine_structures

    del seed  # least squares from the given structures involves no random numbers; kept for a uniform CLI
    measured = read_pattern(pattern, axis=axis)
    loaded, sources = [], []
    for path in structures:
        frames = read_structures(path)
        loaded += frames
        sources += [path.name if len(frames) == 1 else f"{path.name}#{k}" for k in range(len(frames))]
    with stage_bars(["refine"]) as update:
        result = refine_structures(
            measured,
            loaded,
            output,
            sources=sources,
            radiation="neutron" if neutron else "xray",
            wavelength=wavelength,
            symprec=symprec or None,
            texture=parse_texture(texture),
            progress=lambda done, total: update("refine", done, total),
        )
    table = Table(title=f"{pattern.name}: {len(loaded)} structure(s) refined")
    for column in ("rank", "source", "space group", "Rwp %", "parameters", "ΔAIC", "file"):
        table.add_column(column)
    for c in result.ranked:
        r = c.refinement
        table.add_row(
            str(c.rank),
            sources[c.index],
            c.space_group,
            f"{100 * r.rwp:.3f}",
            str(r.n_parameters),
            "" if c.delta_aic is None else f"{c.delta_aic:.1f}",
            c.file,
        )
    console.print(table)
    if result.expected_rwp is not None:
        console.print(f"Rexp (counting noise) = {100 * result.expected_rwp:.3f} %")
    console.print(f"wrote {output}/refined.csv, {len(result.ranked)} CIF(s) and fit plot(s)")
