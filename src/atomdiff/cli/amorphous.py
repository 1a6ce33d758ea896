"""``atomdiff amorphous``: amorphous cells of any size at a given density, optionally guided by spectra."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from atomdiff.cli.options import FinishGuidance, FinishSigma, FinishSteps, Restarts, RestartSigma, RestartSteps, Seed
from atomdiff.cli.progress import stage_bars
from atomdiff.errors import InputError

console = Console()


def amorphous(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output extxyz (all samples); report beside it.")],
    element: Annotated[str, typer.Option(help="Element of the cell.")] = "C",
    density: Annotated[float | None, typer.Option(help="Mass density, g/cm³.")] = None,
    atoms: Annotated[int | None, typer.Option(help="Atoms per cell.")] = None,
    cell: Annotated[Path | None, typer.Option(help="Structure file whose cell is used as it is (fixed cell).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Cells to generate.")] = 1,
    target_xanes: Annotated[
        Path | None, typer.Option(help="Target XANES on the surrogate's bins (column, or per-atom rows).")
    ] = None,
    target_pdf: Annotated[Path | None, typer.Option(help="Target reduced PDF G(r): two columns r (Å), G.")] = None,
    target_sq: Annotated[Path | None, typer.Option(help="Target S(Q): two columns Q (Å⁻¹), S.")] = None,
    weight_xanes: Annotated[float, typer.Option(min=0.0, help="Weight of the XANES misfit.")] = 1.0,
    xanes_scale: Annotated[
        str, typer.Option(help="area: rescale the XANES target to the surrogate's mean area; none: use as given.")
    ] = "area",
    weight_pdf: Annotated[float, typer.Option(min=0.0, help="Weight of the G(r) misfit.")] = 1.0,
    weight_sq: Annotated[float, typer.Option(min=0.0, help="Weight of the S(Q) misfit.")] = 1.0,
    guidance: Annotated[float, typer.Option(min=0.0, help="Guidance strength (step in units of σ; 0 = off).")] = 1.0,
    guidance_mode: Annotated[
        str, typer.Option(help="tweedie (denoised estimate), dps (through the network) or noisy (seed study).")
    ] = "tweedie",
    guidance_start: Annotated[
        float | None, typer.Option(help="Guide only at noise levels σ ≤ this (Å); default: every level.")
    ] = None,
    xanes_start: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="The XANES target guides only at σ ≤ this (Å); default 0.3 (see docs/amorphous.md); 3 (the "
            "shipped prior's σ_max) guides at every level.",
        ),
    ] = None,
    guidance_domain: Annotated[
        int,
        typer.Option(
            min=0,
            help="Guide the XANES of every domain of about this many atoms (cells of up to ~1.5³ times it are "
            "one domain); 0 guides the whole cell's mean (see docs/amorphous.md).",
        ),
    ] = 216,
    guidance_clip: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="No atom's guidance gradient counts for more than this many times the cell's median atom; default "
            "5; 0 leaves gradients unclipped (before session 29; see docs/amorphous.md).",
        ),
    ] = None,
    radiation: Annotated[str, typer.Option(help="Radiation of the G(r)/S(Q) targets: xray or neutron.")] = "xray",
    qmax: Annotated[float | None, typer.Option(help="Q range (Å⁻¹) of the target G(r) (termination).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Noise levels of the sampler.")] = 100,
    sampler: Annotated[str, typer.Option(help="sde (stochastic) or ode (deterministic).")] = "sde",
    restarts: Restarts = None,
    restart_sigma: RestartSigma = 0.2,
    restart_steps: RestartSteps = 20,
    finish_steps: FinishSteps = 0,
    finish_sigma: FinishSigma = 0.1,
    finish_guidance: FinishGuidance = 0.1,
    min_distance: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Pairs closer than this (Å) are pushed apart (default 1.1 for C, else 0.6 × the bond cutoff)."
        ),
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Prior: folder or shipped name.")] = "amorphous_carbon",
    surrogate: Annotated[str, typer.Option(help="XANES surrogate: folder or shipped name.")] = "xanes_carbon_k",
    seed: Seed = 0,
) -> None:
    """Generate amorphous cells with the local diffusion prior, guided by XANES, G(r) and/or S(Q) targets."""
    from atomdiff.structure.io import read_structure
    from atomdiff.tasks.amorphous import (
        AmorphousSettings,
        generate_amorphous,
        read_targets,
        write_amorphous_outputs,
    )
    from atomdiff.weights import load_amorphous_model, load_xanes_surrogate

    if output.suffix.lower() not in (".extxyz", ".xyz"):
        raise InputError(f"--output must end in .extxyz, got {output.name!r}")
    if radiation not in ("xray", "neutron"):
        raise InputError(f"--radiation must be xray or neutron, got {radiation!r}")
    prior = load_amorphous_model(model)
    xanes_model = load_xanes_surrogate(surrogate) if target_xanes is not None else None
    targets = read_targets(target_xanes, target_pdf, target_sq, xanes_model.n_bins if xanes_model else None)
    fixed = read_structure(cell).cell if cell is not None else None
    settings = AmorphousSettings(
        element=element,
        density=density,
        atoms=atoms,
        samples=samples,
        steps=steps,
        sampler=sampler,
        restarts=restarts,
        restart_sigma=restart_sigma,
        restart_steps=restart_steps,
        finish_steps=finish_steps,
        finish_sigma=finish_sigma,
        finish_guidance=finish_guidance,
        min_distance=min_distance,
        guidance=guidance,
        guidance_mode=guidance_mode,
        guidance_start=guidance_start,
        xanes_start=xanes_start if xanes_start is not None else AmorphousSettings.xanes_start,
        guidance_domain=guidance_domain or None,
        guidance_clip=(guidance_clip or None) if guidance_clip is not None else AmorphousSettings.guidance_clip,
        weight_xanes=weight_xanes,
        xanes_scale=xanes_scale,
        weight_pdf=weight_pdf,
        weight_sq=weight_sq,
        pdf_radiation=radiation,
        pdf_qmax=qmax,
        sq_radiation=radiation,
        seed=seed,
    )
    with stage_bars(["sampling"]) as update:
        result = generate_amorphous(
            prior, settings, targets, xanes_model, fixed, progress=lambda k, n: update("sampling", k, n)
        )
    report, rows = write_amorphous_outputs(result, output)
    table = Table(title=f"{len(result.structures)} cell(s) written to {output}")
    for col in rows[0]:
        table.add_column(col)
    for name in result.curves:
        table.add_column(f"misfit {name}")
    for k, row in enumerate(rows):
        table.add_row(*[str(v) for v in row.values()], *[f"{result.curves[n]['misfit'][k]:.4g}" for n in result.curves])
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"report: {report / 'report.html'}")
