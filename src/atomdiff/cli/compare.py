"""``atomdiff compare``: how well does a structure explain a measured powder pattern?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console

from atomdiff.cli.options import Seed, StructurePath, check_output_suffix
from atomdiff.files import atomic_path

console = Console()


def compare(
    pattern: Annotated[Path, typer.Argument(help="Measured pattern: .xy/.xye/.dat/.txt/.csv or .xrdml.")],
    structure: StructurePath,
    neutron: Annotated[bool, typer.Option("--neutron/--xray", help="Radiation of the measurement.")] = False,
    wavelength: Annotated[
        str | None, typer.Option(help="Line name or Å (default: from the file, else CuKa1; 1.54 Å for neutrons).")
    ] = None,
    axis: Annotated[str | None, typer.Option(help="two_theta or q, if the file does not say.")] = None,
    w: Annotated[float, typer.Option("--w", help="Caglioti W (deg²).")] = 0.01,
    u: Annotated[float, typer.Option("--u", help="Caglioti U (deg²).")] = 0.0,
    v: Annotated[float, typer.Option("--v", help="Caglioti V (deg²).")] = 0.0,
    eta: Annotated[float, typer.Option(help="Pseudo-Voigt Lorentzian fraction.")] = 0.5,
    zero_shift: Annotated[float, typer.Option(help="Zero shift, degrees 2θ.")] = 0.0,
    b_iso: Annotated[float, typer.Option("--biso", help="Isotropic B for all atoms, Å².")] = 0.0,
    plot: Annotated[Path | None, typer.Option(help="Write the fit plot (observed, calculated, difference).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the agreement figures as JSON.")] = None,
    seed: Seed = 0,
) -> None:
    """Rwp, Rp, χ² and cosine similarity of a structure's pattern against a measured one (scale and flat
    background fitted)."""
    from atomdiff.data.patterns import read_pattern
    from atomdiff.physics.diffraction import PowderDiffractionModel, Profile
    from atomdiff.report.plots import plot_fit
    from atomdiff.structure.io import read_structure
    from atomdiff.tasks.compare import compare_pattern

    if plot is not None:
        check_output_suffix(plot, (".png",), "--plot")
    if json_out is not None:
        check_output_suffix(json_out, (".json",), "--json")
    measured = read_pattern(pattern, axis=axis)
    s = read_structure(structure)
    lam = wavelength or (str(measured.wavelength) if measured.wavelength else ("1.54" if neutron else "CuKa1"))
    model = PowderDiffractionModel(
        "neutron" if neutron else "xray",
        lam,
        torch.as_tensor(measured.x),
        axis=measured.axis,
        profile=Profile(u, v, w, eta),
        zero_shift=zero_shift,
        b_iso=b_iso,
    )
    result = compare_pattern(measured, s, model)
    console.print(
        f"{s.formula} vs {pattern.name}: Rwp = {100 * result.rwp:.2f} %, Rp = {100 * result.rp:.2f} %, "
        f"χ² = {result.chi2:.3g}, cosine = {result.cosine:.4f}"
    )
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(
                json.dumps({"pattern": str(pattern), "structure": str(structure), **result.metrics()}, indent=2) + "\n"
            )
        console.print(f"wrote {json_out}")
    if plot is not None:
        plot_fit(
            plot,
            measured.x,
            measured.y,
            result.y_calc,
            measured.axis,
            ticks=result.ticks,
            title=f"{s.formula}: Rwp = {100 * result.rwp:.2f} %",
        )
        console.print(f"wrote {plot}")
