"""``atomdiff simulate xrd|neutron|pdf|sq|xanes``: what would be measured for a structure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.console import Console
from rich.markup import escape

from atomdiff.cli.options import Seed, StructurePath, check_output_suffix, parse_floats
from atomdiff.data.patterns import write_pattern
from atomdiff.errors import InputError
from atomdiff.physics.diffraction import PowderDiffractionModel, Profile, two_theta_grid
from atomdiff.physics.profile import chebyshev_background
from atomdiff.physics.radiation import parse_wavelength
from atomdiff.report.plots import plot_pattern
from atomdiff.structure.io import read_structure
from atomdiff.tasks.simulate import add_counting_noise, normalise_to, simulate, write_peak_table

app = typer.Typer(help="Simulate a pattern for a structure: xrd, neutron, pdf, sq, xanes.", no_args_is_help=True)
console = Console()

PATTERN_SUFFIXES = (".xy", ".xye", ".dat", ".txt", ".csv")
Output = Annotated[Path, typer.Option("-o", "--output", help="Pattern file to write (.xy, .xye, .dat, .csv).")]
CurveOutput = Annotated[
    Path, typer.Option("-o", "--output", help="Curve to write: .xy, .dat, .csv, or .gr (G(r)), .sq (S(Q)), .fq (F(Q)).")
]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Also write a PNG plot of the pattern.")]


def _diffraction(
    radiation: str,
    structure: Path,
    output: Path,
    wavelength: str,
    axis: str,
    start: float | None,
    stop: float | None,
    step: float | None,
    u: float,
    v: float,
    w: float,
    eta: float,
    zero_shift: float,
    b_iso: float,
    background: str | None,
    polarization: float,
    form_factors: str,
    peaks: Path | None,
    plot: Path | None,
    counts: float | None,
    seed: int,
) -> None:
    check_output_suffix(output, PATTERN_SUFFIXES, "--output")
    if peaks is not None:
        check_output_suffix(peaks, (".csv",), "--peaks")
    if plot is not None:
        check_output_suffix(plot, (".png",), "--plot")
    lam = parse_wavelength(wavelength)
    if axis == "two_theta":
        grid = two_theta_grid(5.0 if start is None else start, 90.0 if stop is None else stop, step or 0.02)
    elif axis == "q":
        q_start = 0.5 if start is None else start
        q_stop = min(8.0, 0.98 * 4 * math.pi / lam.primary) if stop is None else stop
        q_step = step or 0.002
        if not (q_step > 0 and 0 < q_start < q_stop):
            raise InputError(f"Q range must satisfy 0 < start < stop and step > 0, got {q_start}, {q_stop}, {q_step}")
        grid = torch.arange(q_start, q_stop + 1e-12, q_step, dtype=torch.float64)
    else:
        raise InputError(f"--axis must be 'two_theta' or 'q', got {axis!r}")
    crystal = read_structure(structure)
    model = PowderDiffractionModel(
        radiation,
        lam,
        grid,
        axis=axis,
        profile=Profile(u, v, w, eta),
        zero_shift=zero_shift,
        polarization=polarization,
        b_iso=b_iso,
        form_factors=form_factors,
    )
    pattern = simulate(model, crystal)
    x = pattern.x.numpy()
    # the background is added in the output's units (strongest peak = 100, or --counts), not the model's
    coefficients = parse_floats(background, "--background")
    bg = chebyshev_background(pattern.x, coefficients).numpy() if coefficients else 0.0
    sigma = None
    if counts is not None:
        y, sigma = add_counting_noise(pattern.y[0].numpy(), counts, background=bg, seed=seed)
    else:
        y = normalise_to(pattern.y[0].numpy()) + bg
    rows = write_peak_table(model, crystal, peaks) if peaks is not None else None
    write_pattern(output, x, y, sigma, axis=axis, header=f"{radiation} pattern of {crystal.formula}, λ = {lam}")
    console.print(f"wrote {output} ({len(x)} points, {crystal.formula}, λ = {lam})")
    if rows is not None:
        console.print(f"wrote {peaks} ({len(rows)} peaks)")
    if plot is not None:
        if rows is None:
            from atomdiff.physics.diffraction import peak_table

            rows = peak_table(model, crystal)
        ticks = [r["two_theta"] + zero_shift for r in rows]
        if axis == "q":
            ticks = [4 * math.pi * math.sin(math.radians(t / 2)) / lam.primary for t in ticks]
        labels = [f"{r['h']}{r['k']}{r['l']}" if r["intensity"] > 10 else "" for r in rows]
        plot_pattern(
            plot, x, y, axis, title=f"{crystal.formula} ({radiation}, λ = {lam})", ticks=ticks, tick_labels=labels
        )
        console.print(f"wrote {plot}")


Axis = Annotated[str, typer.Option(help="Grid axis: two_theta (degrees) or q (Å⁻¹).")]
Start = Annotated[float | None, typer.Option(help="First grid point (default 5° or 0.5 Å⁻¹).")]
Stop = Annotated[float | None, typer.Option(help="Last grid point (default 90° or 8 Å⁻¹).")]
Step = Annotated[float | None, typer.Option(help="Grid step (default 0.02° or 0.002 Å⁻¹).")]
CagliotiU = Annotated[float, typer.Option("--u", help="Caglioti U (deg²).")]
CagliotiV = Annotated[float, typer.Option("--v", help="Caglioti V (deg²).")]
CagliotiW = Annotated[float, typer.Option("--w", help="Caglioti W (deg²); FWHM = sqrt(W) at low angle.")]
Eta = Annotated[float, typer.Option(help="Pseudo-Voigt Lorentzian fraction.")]
ZeroShift = Annotated[float, typer.Option(help="Zero shift, degrees 2θ.")]
Biso = Annotated[float, typer.Option("--biso", help="Isotropic displacement B for all atoms, Å².")]
Background = Annotated[
    str | None,
    typer.Option(
        help="Chebyshev background coefficients in the output's units (strongest peak = 100, or counts with "
        "--counts), e.g. '5,1'."
    ),
]
Peaks = Annotated[Path | None, typer.Option(help="Write the peak list CSV here.")]
Counts = Annotated[float | None, typer.Option(help="Add Poisson noise for this many counts at the top.")]


@app.command("xrd")
def xrd(
    structure: StructurePath,
    output: Output,
    wavelength: Annotated[str, typer.Option(help="Line name (CuKa1, CuKa = Kα1+Kα2, MoKa1, ...) or Å.")] = "CuKa1",
    axis: Axis = "two_theta",
    start: Start = None,
    stop: Stop = None,
    step: Step = None,
    u: CagliotiU = 0.0,
    v: CagliotiV = 0.0,
    w: CagliotiW = 0.01,
    eta: Eta = 0.5,
    zero_shift: ZeroShift = 0.0,
    b_iso: Biso = 0.0,
    background: Background = None,
    polarization: Annotated[float, typer.Option(help="K in (1 + K cos²2θ); 1 lab, 0 synchrotron.")] = 1.0,
    form_factors: Annotated[str, typer.Option(help="xraydb (Waasmaier–Kirfel) or pymatgen.")] = "xraydb",
    peaks: Peaks = None,
    plot: PlotOpt = None,
    counts: Counts = None,
    seed: Seed = 0,
) -> None:
    """Powder X-ray diffraction pattern (and peak list) of a structure."""
    _diffraction("xray", **locals())


@app.command("neutron")
def neutron(
    structure: StructurePath,
    output: Output,
    wavelength: Annotated[str, typer.Option(help="Neutron wavelength in Å.")] = "1.54",
    axis: Axis = "two_theta",
    start: Start = None,
    stop: Stop = None,
    step: Step = None,
    u: CagliotiU = 0.0,
    v: CagliotiV = 0.0,
    w: CagliotiW = 0.01,
    eta: Eta = 0.5,
    zero_shift: ZeroShift = 0.0,
    b_iso: Biso = 0.0,
    background: Background = None,
    peaks: Peaks = None,
    plot: PlotOpt = None,
    counts: Counts = None,
    seed: Seed = 0,
) -> None:
    """Constant-wavelength neutron powder diffraction pattern (coherent scattering lengths)."""
    _diffraction("neutron", polarization=1.0, form_factors="xraydb", **locals())


def _grid(start: float, stop: float, step: float, what: str) -> torch.Tensor:
    for name, value in (("start", start), ("stop", stop), ("step", step)):
        if not math.isfinite(value):
            raise InputError(f"{what} {name} must be finite, got {value}")
    if not (step > 0 and 0 <= start < stop):
        raise InputError(f"{what} range must satisfy 0 ≤ start < stop and step > 0, got {start}, {stop}, {step}")
    return torch.arange(start, stop + 1e-12, step, dtype=torch.float64)


@app.command("pdf")
def pdf(
    structure: StructurePath,
    output: CurveOutput,
    radiation: Annotated[str, typer.Option(help="xray or neutron weighting.")] = "xray",
    start: Annotated[float, typer.Option(help="First r, Å.")] = 0.5,
    stop: Annotated[float, typer.Option(help="Last r, Å.")] = 20.0,
    step: Annotated[float, typer.Option(help="r step, Å.")] = 0.01,
    sigma: Annotated[float, typer.Option(help="Gaussian width of each pair distance, Å.")] = 0.05,
    qmax: Annotated[float | None, typer.Option(help="Q-range termination, Å⁻¹ (none if omitted).")] = None,
    qmin: Annotated[float, typer.Option(help="Lower Q of the termination, Å⁻¹.")] = 0.0,
    lorch: Annotated[bool, typer.Option(help="Lorch modification function with --qmax.")] = False,
    qdamp: Annotated[float, typer.Option(help="Instrumental Q resolution damping, Å⁻¹.")] = 0.0,
    plot: PlotOpt = None,
    seed: Seed = 0,
) -> None:
    """Reduced pair distribution function G(r) of a periodic structure."""
    from atomdiff.physics.total_scattering import PDFForwardModel

    check_output_suffix(output, (*PATTERN_SUFFIXES, ".gr"), "--output")
    r = _grid(start, stop, step, "r")
    s = read_structure(structure)
    model = PDFForwardModel(r, radiation=radiation, qmax=qmax, qmin=qmin, lorch=lorch, qdamp=qdamp, sigma=sigma)
    pattern = simulate(model, s)
    _write_curve(output, plot, pattern.x.numpy(), pattern.y[0].numpy(), "r", "G(r) (Å$^{-2}$)", s.formula, "G(r)")


@app.command("sq")
def sq(
    structure: StructurePath,
    output: CurveOutput,
    radiation: Annotated[str, typer.Option(help="xray or neutron weighting.")] = "xray",
    quantity: Annotated[str, typer.Option(help="S(Q) or F(Q) = Q[S(Q) − 1].")] = "S(Q)",
    start: Annotated[float, typer.Option(help="First Q, Å⁻¹.")] = 0.5,
    stop: Annotated[float, typer.Option(help="Last Q, Å⁻¹.")] = 25.0,
    step: Annotated[float, typer.Option(help="Q step, Å⁻¹.")] = 0.01,
    r_max: Annotated[float, typer.Option(help="Pairs up to this distance, Å.")] = 20.0,
    window: Annotated[str, typer.Option(help="Real-space window: lorch or none.")] = "lorch",
    plot: PlotOpt = None,
    seed: Seed = 0,
) -> None:
    """Total scattering structure factor S(Q) or F(Q) of a periodic structure."""
    from atomdiff.physics.total_scattering import ScatteringForwardModel

    if quantity not in ("S(Q)", "F(Q)"):
        raise InputError(f"--quantity must be S(Q) or F(Q), got {quantity!r}")
    check_output_suffix(output, (*PATTERN_SUFFIXES, ".sq" if quantity == "S(Q)" else ".fq"), "--output")
    q = _grid(start, stop, step, "Q")
    if q[0] <= 0:
        raise InputError("Q must start above 0")
    s = read_structure(structure)
    model = ScatteringForwardModel(q, radiation=radiation, quantity=quantity, r_max=r_max, window=window)
    pattern = simulate(model, s)
    _write_curve(output, plot, pattern.x.numpy(), pattern.y[0].numpy(), "q", quantity, s.formula, quantity)


def _write_curve(
    output: Path, plot: Path | None, x: np.ndarray, y: np.ndarray, axis: str, ylabel: str, formula: str, quantity: str
) -> None:
    if plot is not None:
        check_output_suffix(plot, (".png",), "--plot")
    write_pattern(output, x, y, axis=axis, header=f"{quantity} of {formula}")
    console.print(f"wrote {output} ({len(x)} points, {quantity} of {formula})")
    if plot is not None:
        plot_pattern(plot, x, y, axis, ylabel=ylabel, title=f"{quantity} of {formula}")
        console.print(f"wrote {plot}")


@app.command("xanes")
def xanes(
    structure: StructurePath,
    absorber: Annotated[str, typer.Option(help="Absorbing element, e.g. C.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV: energy_eV, site_<index>..., mean.")],
    edge: Annotated[str, typer.Option(help="Absorption edge: K, L1, L2, L3, M1..M5, N1..N7.")] = "K",
    sites: Annotated[
        str, typer.Option(help="'all', a number of sites drawn at random (--seed), or indices '0,4,9' ('5,' for one).")
    ] = "all",
    cluster_radius: Annotated[float, typer.Option(help="Cluster radius around each absorber, Å.")] = 6.0,
    scf_radius: Annotated[float, typer.Option(help="Self-consistent potential radius, Å (0: none).")] = 4.0,
    fms_radius: Annotated[float, typer.Option(help="Full multiple scattering radius, Å.")] = 5.0,
    corehole: Annotated[str, typer.Option(help="Core hole: RPA, FSR or NONE.")] = "RPA",
    grid_step: Annotated[float, typer.Option(help="Step of the common energy grid, eV.")] = 0.1,
    workers: Annotated[int, typer.Option(help="FEFF runs at once (processes).")] = 1,
    cache: Annotated[
        Path | None, typer.Option(help="Folder of cached site spectra (default ~/.cache/atomdiff/xanes).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Compute every site; read and write no cache.")] = False,
    seed: Seed = 0,
) -> None:
    """XANES of a structure from first principles: FEFF10 on a cluster around each absorbing site, averaged."""
    from atomdiff.cli.progress import stage_bars
    from atomdiff.physics.xanes import (
        FeffSettings,
        SpectrumCache,
        default_cache_dir,
        parse_sites,
        simulate_xanes,
        write_xanes_csv,
    )

    check_output_suffix(output, (".csv",), "--output")
    settings = FeffSettings(
        absorber,
        edge=edge,
        cluster_radius=cluster_radius,
        fms_radius=fms_radius,
        scf_radius=scf_radius,
        corehole=corehole,
    )
    chosen = parse_sites(sites)
    s = read_structure(structure)
    store = None if no_cache else SpectrumCache(cache if cache is not None else default_cache_dir())
    with stage_bars(["sites"]) as update:
        result = simulate_xanes(
            s,
            settings,
            chosen,
            workers=workers,
            cache=store,
            progress=lambda done, total: update("sites", done, total),
            seed=seed,
            grid_step=grid_step,
        )
    for failure in result.failed:
        console.print(f"[yellow]site {failure.site} skipped:[/] {escape(failure.reason)}", highlight=False)
    write_xanes_csv(output, result)
    console.print(
        f"wrote {output} ({len(result.energy)} energies, {len(result.sites)} {settings.absorber} "
        f"{settings.edge}-edge sites of {s.formula}; {result.computed} FEFF runs, {result.cached} from cache"
        + (f", {len(result.failed)} failed" if result.failed else "")
        + ")"
    )
