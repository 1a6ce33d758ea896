"""``atomdiff phases``: which phases a powder pattern contains, and how much of each (wt%)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from atomdiff.cli.options import Seed, Texture, parse_texture
from atomdiff.cli.progress import stage_bars
from atomdiff.errors import InputError

console = Console()


def phases(
    pattern: Annotated[Path, typer.Argument(help="Measured pattern (.xy, .xye, .dat, .csv, .xrdml).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (phases.csv, CIFs, fit.png, report).")],
    elements: Annotated[str, typer.Option(help="Elements the sample may contain, e.g. Cu,Zn,Sn,S.")],
    known: Annotated[Path | None, typer.Option(help="Folder of CIFs of phases that may be present.")] = None,
    formula: Annotated[
        list[str] | None, typer.Option(help="A composition to generate a phase for (repeatable), e.g. ZnS.")
    ] = None,
    neutron: Annotated[bool, typer.Option("--neutron/--xray", help="Radiation (default X-rays).")] = False,
    wavelength: Annotated[str, typer.Option(help="Wavelength name (CuKa1, ...) or value in Å.")] = "CuKa1",
    axis: Annotated[str | None, typer.Option(help="two_theta or q (default: from the file).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Crystal model for --formula phases.")] = None,
    candidates: Annotated[int, typer.Option(min=1, help="Candidates generated per --formula.")] = 20,
    search: Annotated[
        bool | None,
        typer.Option(
            "--search/--no-search",
            help="Also generate a phase for each composition of the model's training cells made of --elements "
            "(the compound of the most elements first). Default: only when neither --known nor --formula is given.",
        ),
    ] = None,
    min_fraction: Annotated[float, typer.Option(help="Phases below this weight fraction are dropped.")] = 0.005,
    positions_above: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=1.0,
            help="Phases at or above this weight fraction (in a first joint fit) also have their coordinates "
            "refined jointly, in their space groups; the others' stay fixed.",
        ),
    ] = 0.2,
    fix_positions: Annotated[
        bool, typer.Option("--fix-positions", help="Keep every phase's coordinates as given (or generated).")
    ] = False,
    texture: Texture = None,
    seed: Seed = 0,
) -> None:
    """Decompose a pattern into phases: refine candidates jointly, report weight fractions (Hill–Howard)."""
    from atomdiff.data.patterns import read_pattern
    from atomdiff.diffusion.constraints import parse_formula
    from atomdiff.structure.elements import chemical_symbols, parse_element_list
    from atomdiff.structure.io import read_structures
    from atomdiff.tasks.phases import analyse_phases, generated_phases, search_compositions, write_phase_outputs
    from atomdiff.weights import choose_crystal_model, load_crystal_model

    allowed = set(parse_element_list(elements))
    direction = parse_texture(texture)
    measured = read_pattern(pattern, axis)
    radiation = "neutron" if neutron else "xray"
    lam = measured.wavelength if measured.wavelength and wavelength == "CuKa1" else wavelength
    found: list[tuple[str, object]] = []
    if known is not None:
        if not known.is_dir():
            raise InputError("--known must be a folder of CIF files", path=str(known))
        cifs = sorted(known.glob("*.cif"))
        if not cifs:
            raise InputError("no .cif files in the --known folder", path=str(known))
        for cif in cifs:
            structure = read_structures(cif)[0]
            extra = set(int(z) for z in structure.numbers) - allowed
            if extra:
                names = ", ".join(chemical_symbols[z] for z in sorted(extra))
                raise InputError(f"phase contains {names}, not in --elements", path=str(cif))
            found.append((cif.stem, structure))
    comps = []
    for text in formula or []:
        comp = parse_formula(text)
        extra = set(comp) - allowed
        if extra:
            raise InputError(
                f"--formula {text} contains {', '.join(chemical_symbols[z] for z in extra)}, not in --elements"
            )
        comps.append((text, comp))
    names = {text: model or choose_crystal_model(set(comp), True) for text, comp in comps}
    loaded: dict[str, object] = {}
    if search or (search is None and not found and not comps):
        name = model or choose_crystal_model(allowed)
        loaded[name] = load_crystal_model(name)  # loaded once: its cells here, its samples below
        order = parse_element_list(elements)
        searched = search_compositions(loaded[name].stats.cells, order, [c for _, c in comps])
        if not searched and not comps and not found:
            raise InputError(f"the model's training cells have no composition of {elements} alone: give --formula")
        console.print(f"phases searched for ({name}): {', '.join(text for text, _ in searched) or 'none'}")
        comps += searched
        names.update({text: name for text, _ in searched})

    def model_for(text: str):
        if names[text] not in loaded:
            loaded[names[text]] = load_crystal_model(names[text])
        return loaded[names[text]]

    with stage_bars(()) as update:
        found += generated_phases(
            measured,
            found,
            comps,
            model_for,
            radiation=radiation,
            wavelength=lam,
            candidates=candidates,
            seed=seed,
            texture=direction,
            progress=update,
        )
        if not found:
            raise InputError("no candidate phases: give --known CIFs and/or --formula compositions")
        analysis = analyse_phases(
            measured,
            found,
            radiation=radiation,
            wavelength=lam,
            min_fraction=min_fraction,
            texture=direction,
            positions_above=None if fix_positions else positions_above,
            progress=update,
        )
    write_phase_outputs(analysis, measured, measured.axis, output, radiation, lam)
    table = Table(title=f"phases in {pattern.name} (Rwp {100 * analysis.rwp:.2f} %)")
    for col in ("phase", "formula", "space group", "wt%", "σ", "own lines"):
        table.add_column(col)
    for ph in analysis.phases:
        table.add_row(
            ph.name,
            ph.refinement.structure.formula,
            ph.space_group,
            f"{100 * ph.weight_fraction:.2f}",
            f"{100 * ph.sigma:.2f}",
            f"{100 * ph.own_lines:.0f} %",
        )
    console.print(table)
    for name, reason in analysis.dropped:
        console.print(f"not needed: {name} ({reason})")
    if analysis.warning():
        console.print(f"[yellow]warning:[/] {analysis.warning()}")
    console.print(f"report: {output / 'report.html'}")
