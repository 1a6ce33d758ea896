"""``atomdiff solve``: from a powder pattern and chemical knowledge to ranked, refined crystal structures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from atomdiff.cli.generate import SamplerOpt, Steps, build_constraint, check_sampler
from atomdiff.cli.options import CfgScale, Neutron, PatternAxis, Seed, Texture, Wavelength, parse_texture
from atomdiff.cli.progress import stage_bars
from atomdiff.diffusion.crystal import DEFAULT_CFG_SCALE
from atomdiff.errors import InputError

console = Console()


def solve(
    pattern: Annotated[Path, typer.Argument(help="Measured pattern (.xy, .xye, .dat, .csv, .xrdml).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output folder (CIFs, candidates.csv, plots, report).")
    ],
    elements: Annotated[
        str | None,
        typer.Option(help="The sample's elements, e.g. Cu,Zn,Sn,S: all appear in every candidate (see --only-listed)."),
    ] = None,
    exclude: Annotated[str | None, typer.Option(help="Elements that must not appear, e.g. O,H.")] = None,
    formula: Annotated[str | None, typer.Option(help="Exact formula unit, e.g. Cu2ZnSnS4.")] = None,
    only_listed: Annotated[
        bool,
        typer.Option(
            "--only-listed/--allow-others",
            help="With --elements: candidates hold only the listed elements (default), or may also hold other "
            "elements the model knows (minus --exclude).",
        ),
    ] = True,
    atoms: Annotated[str | None, typer.Option(help="Atoms per cell: 8-16 or 8.")] = None,
    neutron: Neutron = False,
    wavelength: Wavelength = "CuKa1",
    axis: PatternAxis = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Crystal model folder or shipped name (default: chosen by elements)."),
    ] = None,
    candidates: Annotated[int, typer.Option(min=1, help="Candidates to generate and refine.")] = 20,
    top: Annotated[int, typer.Option(min=1, help="Candidates written as CIF with a fit plot.")] = 5,
    guidance: Annotated[float, typer.Option(min=0.0, help="Physics-guidance strength (0 = off).")] = 0.5,
    refine_keep: Annotated[int, typer.Option(min=1, help="Candidates refined through positions and B.")] = 8,
    texture: Texture = None,
    condition: Annotated[
        bool,
        typer.Option(
            "--condition/--no-condition",
            help="Condition a pattern-conditioned model on the pattern (classifier-free guidance; other models "
            "ignore it).",
        ),
    ] = True,
    cfg: CfgScale = DEFAULT_CFG_SCALE,
    free_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="With --elements and no --formula: share of the candidates whose species are sampled freely; the "
            "others predict structures for the model's training compositions with exactly these elements.",
        ),
    ] = 0.25,
    relax_steps: Annotated[
        int,
        typer.Option(min=0, help="CHGNet relaxation steps for each sample before refinement (0: refine as sampled)."),
    ] = 100,
    relax_filter: Annotated[
        str,
        typer.Option(
            help="ASE cell filter of the relaxation: 'unit' (UnitCellFilter, faster) or 'frechet' "
            "(FrechetCellFilter, for large cell changes).",
        ),
    ] = "unit",
    cell_pass: Annotated[
        int,
        typer.Option(
            min=0,
            help="Second pass: candidates sampled with the lattice held at the best refined cells of the first "
            "(0: none).",
        ),
    ] = 16,
    cell_guidance: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Physics-guidance strength of the second pass, where the lattice is held at a measured cell and the "
            "pattern's gradient points to the atoms' places.",
        ),
    ] = 3.0,
    index_cells: Annotated[
        int,
        typer.Option(
            min=0,
            help="The second pass also holds up to this many cells found by indexing the pattern's peaks, the best "
            "that the candidates' composition can fill (0: no indexing).",
        ),
    ] = 1,
    restarts: Annotated[
        int,
        typer.Option(
            min=0,
            help="Restart pass: this many candidates re-noised from the best distinct ones (to --restart-level) "
            "and denoised again in their cells under the second pass's guidance (0: none).",
        ),
    ] = 0,
    restart_level: Annotated[
        float,
        typer.Option(min=0.01, max=1.0, help="Noise level (diffusion time, 0–1) the restarts start from."),
    ] = 0.3,
    index_contents: Annotated[
        int,
        typer.Option(
            min=1,
            help="Each indexed cell is held with up to this many cell contents, the likeliest for its volume first "
            "(by the model's training cells; with --held-contents statistics).",
        ),
    ] = 2,
    held_contents: Annotated[
        str,
        typer.Option(
            help="How an indexed cell is filled: statistics (the likeliest contents for its volume from the "
            "model's training cells) or candidates (the best candidate's formula unit at its volume per atom).",
        ),
    ] = "statistics",
    index_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of the second pass's candidates sampled in the cells found by indexing the pattern, the rest "
            "in the refined cells of the first pass's best candidates.",
        ),
    ] = 0.75,
    stop_gof: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Skip relaxation and the second pass once a candidate's Rwp is within this factor of the expected "
            "R factor of the pattern's counting noise (needs counts or uncertainties; 0: never skip).",
        ),
    ] = 1.05,
    orderings: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also refine up to this many other orderings of each written candidate's species that the "
            "radiation hardly tells apart (X-rays: Cu/Zn) and rank them with the rest (0: none).",
        ),
    ] = 4,
    ordering_tolerance: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Species count as hardly distinguishable when their scattering powers (X-rays: f at zero angle; "
            "neutrons: b) differ by at most this fraction.",
        ),
    ] = 0.05,
    steps: Steps = 100,
    sampler: SamplerOpt = "pc",
    seed: Seed = 0,
) -> None:
    """Solve a powder pattern: generate candidates for the chemistry, steer them by the pattern, refine, rank."""
    from atomdiff.data.patterns import read_pattern
    from atomdiff.tasks.solve import SolveSettings
    from atomdiff.tasks.solve import solve as run_solve
    from atomdiff.weights import choose_crystal_model, load_crystal_model

    check_sampler(sampler)
    direction = parse_texture(texture)
    if top > candidates:
        raise InputError(f"--top ({top}) cannot exceed --candidates ({candidates})")
    constraint = build_constraint(formula, elements, exclude, atoms)
    if constraint.formula is None and not constraint.required:
        raise InputError("say what the sample contains: --elements and/or --formula")
    measured = read_pattern(pattern, axis)
    name = model or choose_crystal_model(set(constraint.formula or constraint.required), constraint.formula is not None)
    diffusion = load_crystal_model(name)
    if only_listed and constraint.formula is None:
        constraint = constraint.only_required(set(diffusion.stats.elements))
    settings = SolveSettings(
        candidates=candidates,
        top=top,
        steps=steps,
        sampler=sampler,
        guidance=guidance,
        refine_keep=refine_keep,
        seed=seed,
        texture=direction,
        condition=condition,
        cfg=cfg,
        free_fraction=free_fraction,
        relax_steps=relax_steps,
        relax_filter=relax_filter,
        cell_pass=cell_pass,
        cell_guidance=cell_guidance,
        index_cells=index_cells,
        index_contents=index_contents,
        held_contents=held_contents,
        index_share=index_share,
        restarts=restarts,
        restart_level=restart_level,
        stop_gof=stop_gof,
        orderings=orderings,
        ordering_tolerance=ordering_tolerance,
    )
    conditioned = f", conditioned on the pattern (cfg {cfg:g})" if condition and diffusion.conditioned else ""
    console.print(
        f"model [bold]{name}[/bold]; {candidates} candidates, guidance {guidance:g}{conditioned}, seed {seed}"
    )
    with stage_bars(("generate", "relax", "refine")) as update:
        result = run_solve(
            diffusion,
            measured,
            constraint,
            output,
            radiation="neutron" if neutron else "xray",
            wavelength=measured.wavelength if measured.wavelength and wavelength == "CuKa1" else wavelength,
            settings=settings,
            progress=update,
        )
    table = Table(title=f"best candidates for {pattern.name}")
    for col in ("rank", "formula", "space group", "Rwp %", "a, b, c (Å)", "file"):
        table.add_column(col)
    for c in result.ranked[:top]:
        a, b, cc, *_ = c.refinement.structure.lattice_parameters
        table.add_row(
            str(c.rank),
            c.refinement.structure.formula,
            c.space_group,
            f"{100 * c.refinement.rwp:.2f}",
            f"{a:.4f}, {b:.4f}, {cc:.4f}",
            c.file,
        )
    console.print(table)
    for cell in result.indexed:
        console.print(f"indexed: {cell.describe()}{result.held_note(cell)}")
    if result.skipped:
        console.print(
            f"a candidate fitted to the counting noise (Rwp ≤ {stop_gof:g} × Rexp = "
            f"{100 * stop_gof * result.expected_rwp:.2f} %): skipped {', '.join(result.skipped)}"
        )
    times = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result.stage_seconds.items())
    console.print(f"wall time {sum(result.stage_seconds.values()):.0f} s ({times})")
    console.print(f"report: {output / 'report.html'}")
