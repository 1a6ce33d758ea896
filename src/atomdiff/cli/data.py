"""``atomdiff data``: make training data (random crystals relaxed with CHGNet; structures labelled with XANES)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from atomdiff.cli.options import (
    BoundaryAxis,
    BoundaryElement,
    BoundaryKind,
    BoundaryPlane,
    BoundarySigma,
    Seed,
    parse_triple,
)
from atomdiff.errors import InputError

console = Console()
app = typer.Typer(help="Make training data.", no_args_is_help=True)


@app.command("crystals")
def crystals(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (resumed if it exists).")],
    systems: Annotated[
        str | None, typer.Option(help="Comma-separated systems, e.g. Cu-Zn-Sn-S,Cd-Te (see --list); default all.")
    ] = None,
    formula: Annotated[list[str] | None, typer.Option(help="Extra compositions (repeatable), e.g. ZnS.")] = None,
    per_composition: Annotated[int, typer.Option(min=1, help="Candidates per composition.")] = 50,
    max_atoms: Annotated[int, typer.Option(min=1, help="Largest cell, atoms.")] = 20,
    relax_steps: Annotated[int, typer.Option(min=0, help="CHGNet relaxation steps (0: energy only).")] = 300,
    energy_window: Annotated[float, typer.Option(min=0.0, help="Kept above the lowest energy, eV/atom.")] = 0.1,
    list_systems: Annotated[bool, typer.Option("--list", help="List the known systems and exit.")] = False,
    source: Annotated[
        str,
        typer.Option(
            help="Starting structures: 'pyxtal' (random symmetric crystals) or 'tetrahedral' (cation orderings on "
            "sphalerite/wurtzite: of --systems the tetrahedral compounds, of --formula those with one cation per "
            "anion)."
        ),
    ] = "pyxtal",
    space_groups: Annotated[
        str | None,
        typer.Option(
            help="Random crystals only in these space groups: numbers, ranges or crystal systems, e.g. "
            "orthorhombic, 16-74 or 62,63 (pyxtal source; default all)."
        ),
    ] = None,
    seed: Seed = 0,
) -> None:
    """Crystals relaxed with CHGNet, from random symmetric crystals (PyXtal) or tetrahedral cation orderings;
    resumable; writes OUT/train.csv for training."""
    from atomdiff.cli.progress import stage_bars
    from atomdiff.data.generate import SYSTEMS, CrystalDataGenerator
    from atomdiff.data.generate.crystals import parse_space_groups

    if list_systems:
        for name, comps in SYSTEMS.items():
            console.print(f"{name}: {', '.join(comps)}")
        return
    names = (
        list(SYSTEMS)
        if systems is None and not formula
        else [s.strip() for s in (systems or "").split(",") if s.strip()]
    )
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise InputError(f"unknown system {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    from_systems = [c for n in names for c in SYSTEMS[n]]
    requested = from_systems + list(formula or [])
    if source == "tetrahedral":  # of a system, only the compounds known in tetrahedral structures
        from atomdiff.data.generate.crystals import TETRAHEDRAL

        from_systems = [c for c in from_systems if c in TETRAHEDRAL]
    compositions = from_systems + list(formula or [])
    groups = None if space_groups is None else parse_space_groups(space_groups)
    generator = CrystalDataGenerator(
        output, compositions, per_composition, max_atoms, relax_steps, energy_window, seed, source, groups
    )
    skipped = sorted(set(requested) - set(generator.compositions))
    if skipped:
        console.print(f"not tetrahedral, skipped: {', '.join(skipped)}")
    with stage_bars(("relax",)) as update:
        computed = generator.run(lambda done, total: update("relax", done, total))
    kept, relaxed = generator.finish()
    console.print(
        f"relaxed {computed} now ({relaxed} in all); kept {kept} within {energy_window} eV/atom: {output / 'train.csv'}"
    )


@app.command("xanes")
def xanes(
    structures: Annotated[
        list[Path], typer.Argument(help="Structure files (CIF, extxyz/xyz, POSCAR/.vasp, CSV of CIFs).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Data-set folder (resumed if it exists).")],
    absorber: Annotated[str, typer.Option(help="Absorbing element, e.g. C.")],
    split: Annotated[str, typer.Option(help="Split to write: poscar/<split>/ and xanes/<split>/.")] = "train",
    edge: Annotated[str, typer.Option(help="Absorption edge: K, L1, L2, L3, M1..M5, N1..N7.")] = "K",
    cluster_radius: Annotated[float, typer.Option(help="Cluster radius around each absorber, Å.")] = 6.0,
    scf_radius: Annotated[float, typer.Option(help="Self-consistent potential radius, Å (0: none).")] = 4.0,
    fms_radius: Annotated[float, typer.Option(help="Full multiple scattering radius, Å.")] = 5.0,
    corehole: Annotated[str, typer.Option(help="Core hole: RPA, FSR or NONE.")] = "RPA",
    emin: Annotated[
        float | None, typer.Option(help="First grid energy, eV (FEFF photon energy; default: the first structure's).")
    ] = None,
    emax: Annotated[
        float | None, typer.Option(help="Last grid energy, eV (default: first structure's range less 10 eV).")
    ] = None,
    step: Annotated[float | None, typer.Option(help="Grid step, eV (default 0.5, or the folder's).")] = None,
    workers: Annotated[int, typer.Option(help="FEFF runs at once (processes).")] = 1,
    cache: Annotated[
        Path | None, typer.Option(help="Folder of cached site spectra (default ~/.cache/atomdiff/xanes).")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Read and write no cache (an interrupted structure starts over).")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Compute again the structures listed in failed.csv.")
    ] = False,
    sites_per_structure: Annotated[
        int | None,
        typer.Option(min=1, help="Label this many absorbing atoms per structure, drawn with --seed (default: all)."),
    ] = None,
    seed: Seed = 0,
) -> None:
    """Label structures with per-site FEFF10 XANES for `atomdiff train xanes`; resumable.

    Writes OUT/poscar/<split>/<name>.vasp and OUT/xanes/<split>/<name>.csv (header: energies in eV; one row per
    absorbing atom, in order; with --sites-per-structure the header starts with `site` and each row with its
    atom's index) on one energy grid fixed in OUT/settings.json. A structure with a failed site is left out and
    listed in OUT/failed.csv.
    """
    from rich.markup import escape

    from atomdiff.cli.progress import stage_bars
    from atomdiff.data.generate.xanes import XanesDataGenerator, load_inputs
    from atomdiff.physics.xanes import FeffSettings, SpectrumCache, default_cache_dir

    settings = FeffSettings(
        absorber,
        edge=edge,
        cluster_radius=cluster_radius,
        fms_radius=fms_radius,
        scf_radius=scf_radius,
        corehole=corehole,
    )
    store = None if no_cache else SpectrumCache(cache if cache is not None else default_cache_dir())
    generator = XanesDataGenerator(
        output,
        settings,
        split,
        emin=emin,
        emax=emax,
        step=step,
        cache=store,
        workers=workers,
        retry_failed=retry_failed,
        sites_per_structure=sites_per_structure,
        seed=seed,
    )
    items = load_inputs(structures)
    with stage_bars(("structures", "sites")) as update:
        summary = generator.run(items, update)
    grid = summary.grid
    if summary.failed:
        console.print(
            f"[yellow]{summary.failed} structure(s) left out ({summary.failed_sites} failed sites):[/] "
            f"{escape(str(generator.failed_path))}",
            highlight=False,
        )
    per_run = f", {summary.feff_seconds / summary.computed:.1f} s per run" if summary.computed else ""
    console.print(
        f"{summary.written} structures labelled, {summary.skipped} already done or listed as failed; "
        f"{summary.computed} FEFF runs{per_run}, {summary.cached} sites reused (cache or identical site)"
        + (f"; grid {grid.emin:g}–{grid.emax:g} eV step {grid.step:g} ({len(grid.energies)} bins)" if grid else "")
        + f": {output}",
        highlight=False,
    )


@app.command("ordered")
def ordered(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file (.extxyz).")],
    per_phase: Annotated[int, typer.Option(min=1, help="Structures per phase.")] = 200,
    phases: Annotated[
        str | None, typer.Option(help="Comma-separated phases (default all): sc,bcc,fcc,hcp,diamond,rock-salt,...")
    ] = None,
    species: Annotated[
        str, typer.Option(help="Two elements: elemental phases use the first, binaries both.")
    ] = "Cu,Zn",
    seed: Seed = 0,
) -> None:
    """Ordered elemental and binary crystals in one fixed 12 Å cubic box, with thermal noise (extxyz)."""
    from collections import Counter

    from atomdiff.data.generate.ordered import BOX, PHASES, write_ordered_dataset

    if output.suffix.lower() not in (".extxyz", ".xyz"):
        raise InputError("--output must end in .extxyz (or .xyz)", path=str(output))
    names = list(PHASES) if phases is None else [p.strip() for p in phases.split(",") if p.strip()]
    unknown = [p for p in names if p not in PHASES]
    if unknown or not names:
        raise InputError(f"unknown phase {', '.join(unknown) or '(none given)'}; known: {', '.join(PHASES)}")
    elements = [s.strip() for s in species.split(",")]
    if len(elements) != 2:
        raise InputError(f"--species: give two elements like Cu,Zn, got {species!r}")
    structures = write_ordered_dataset(output, per_phase, seed, phases=names, species=elements)
    counts = Counter(s.info["phase"] for s in structures)
    summary = ", ".join(f"{p} {n}" for p, n in counts.items())
    console.print(f"wrote {len(structures)} structures in a {BOX:g} Å cubic box to {output}: {summary}")


@app.command("grains")
def grains(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file (.extxyz).")],
    element: BoundaryElement = "W",
    sigma: BoundarySigma = 5,
    plane: BoundaryPlane = "1,0,0",
    kind: BoundaryKind = "twist",
    axis: BoundaryAxis = None,
    lattice: Annotated[str | None, typer.Option(help="fcc or bcc (default: the element's).")] = None,
    lattice_constant: Annotated[
        float, typer.Option(min=0.5, help="Lattice constant (Å) of the data: the model learns it, gb scales to it.")
    ] = 3.0,
    expand: Annotated[int, typer.Option(min=1, help="Grain thickness of the cell, in CSL periods.")] = 2,
    in_plane: Annotated[str, typer.Option(help="Repeats of the boundary cell along its two in-plane vectors.")] = "1,1",
    number: Annotated[int, typer.Option("-n", "--number", min=1, help="Structures (alternating grains).")] = 400,
    seed: Seed = 0,
) -> None:
    """Bulk crystals of both grains of one boundary, in the boundary's own cell, with thermal noise (extxyz): the
    training set of a voxel model for `atomdiff gb --model`."""
    from atomdiff.data.generate.grains import write_grain_dataset
    from atomdiff.physics.potentials import REFERENCE_LATTICES
    from atomdiff.structure.grain_boundary import build_bicrystal

    if output.suffix.lower() not in (".extxyz", ".xyz"):
        raise InputError("--output must end in .extxyz (or .xyz)", path=str(output))
    repeats = [int(v) for v in in_plane.replace(" ", "").split(",") if v.strip().lstrip("-").isdigit()]
    if len(repeats) != 2 or min(repeats) < 1:
        raise InputError(f"--in-plane: write two positive repeats like 3,3; got {in_plane!r}")
    lattice = lattice or REFERENCE_LATTICES.get(element)
    if lattice is None:
        raise InputError(f"give --lattice (fcc or bcc) for {element}")
    bicrystal = build_bicrystal(
        element,
        lattice,
        lattice_constant,
        sigma,
        parse_triple(plane, "--plane"),  # type: ignore[arg-type]
        kind,
        parse_triple(axis, "--axis"),
        expand_times=expand,
        in_plane=(repeats[0], repeats[1]),
    )
    structures = write_grain_dataset(output, bicrystal, number, seed=seed)
    lengths = " × ".join(f"{x:.3f}" for x in structures[0].cell.lengths())
    console.print(
        f"wrote {len(structures)} structures ({len(structures[0])} atoms, cell {lengths} Å, both grains) to {output}"
    )


@app.command("amorphous")
def amorphous(
    output: Annotated[Path, typer.Option("--output", "-o", help="Data-set folder (resumed if it exists).")],
    element: Annotated[str, typer.Option(help="Element: C or Si.")] = "C",
    densities: Annotated[
        str, typer.Option(help="Densities in g/cm³: 'a,b,c' or 'start:stop:step' (stop included).")
    ] = "1.5:3.5:0.25",
    per_density: Annotated[int, typer.Option(min=1, help="Cells per density.")] = 4,
    atoms: Annotated[int, typer.Option(min=2, help="Atoms per cell.")] = 216,
    potential: Annotated[
        str, typer.Option(help="C: tersoff, lcbop, airebo, snap; Si: tersoff, sw, edip (LAMMPS's files).")
    ] = "lcbop",
    split: Annotated[str, typer.Option(help="Split to write: OUT/poscar/<split>/.")] = "train",
    quench_rate: Annotated[float | None, typer.Option(help="Quench rate, K/ps (default: the element's).")] = None,
    anneal_temperature: Annotated[float | None, typer.Option(help="Anneal plateau, K (default: none).")] = None,
    anneal_time: Annotated[float, typer.Option(min=0, help="Anneal time, ps.")] = 0.0,
    workers: Annotated[int, typer.Option(min=1, help="Cells at once (processes, one core each).")] = 1,
    seed: Seed = 0,
) -> None:
    """Amorphous cells by melt–quench MD in LAMMPS (random start, liquid, quench, minimisation); resumable.

    Writes OUT/poscar/<split>/d<density>_<index>.vasp (what `atomdiff train amorphous --data OUT` reads),
    OUT/summary.csv (energy and, for carbon, sp/sp2/sp3 fractions per cell) and OUT/settings.json.
    """
    import dataclasses

    from atomdiff.cli.progress import stage_bars
    from atomdiff.data.generate.amorphous import DEFAULT_PROTOCOLS, MeltQuench, MeltQuenchGenerator, parse_densities

    values = parse_densities(densities)
    protocol = DEFAULT_PROTOCOLS.get(element, MeltQuench())
    changes: dict[str, float] = {}
    if quench_rate is not None:
        changes["quench_rate"] = quench_rate
    if anneal_temperature is not None:
        changes["anneal_temperature"] = anneal_temperature
        changes["anneal_time"] = anneal_time
    protocol = dataclasses.replace(protocol, **changes)
    generator = MeltQuenchGenerator(output, element, atoms, potential, protocol, split, seed, workers)
    with stage_bars(("cells",)) as update:
        summary = generator.run(values, per_density, lambda done, total: update("cells", done, total))
    per_cell = f", {summary.seconds / summary.written:.1f} s per cell" if summary.written else ""
    console.print(
        f"{summary.written} cells written, {summary.skipped} already there{per_cell}: {generator.folder}",
        highlight=False,
    )


@app.command("download")
def download(
    names: Annotated[
        list[str] | None, typer.Argument(help="Datasets: perov_5, carbon_24, a-C_xanes, amorphous_carbon (see --list).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder that holds the dataset folders (resumed).")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="Fetch from this mirror instead: http(s):// or file:// URL, or a folder laid out like the repository."
        ),
    ] = None,
    list_datasets: Annotated[bool, typer.Option("--list", help="List the datasets and exit.")] = False,
) -> None:
    """Download public datasets into OUT/NAME/ in the layout the tests and benchmarks read; resumable.

    Each file is checked with atomdiff's readers; OUT/NAME/SOURCE.md records the source, date and licence.
    Point the tests at them with ATOMDIFF_SHARED_DATA=OUT.
    """
    from rich.markup import escape

    from atomdiff.cli.progress import stage_bars
    from atomdiff.data.download import DATASETS
    from atomdiff.data.download import download as fetch

    if list_datasets:
        for dataset in DATASETS.values():
            console.print(
                f"[bold]{dataset.name}[/] ({len(dataset.files)} files, github.com/{dataset.repository}): "
                f"{escape(dataset.description)} Licence: {escape(dataset.licence)}",
                highlight=False,
            )
        return
    if not names:
        raise InputError(f"name at least one dataset: {', '.join(DATASETS)} (or --list)")
    if output is None:
        raise InputError("--output/-o: the folder to download into is required")
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise InputError(f"unknown dataset {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    results = []
    with stage_bars(names) as update:
        for name in names:
            results.append(fetch(name, output, source=source, progress=update))
    for result in results:
        console.print(
            f"{result.name}: {len(result.downloaded)} downloaded, {len(result.skipped)} already there, checked: "
            f"{escape(str(result.root))}",
            highlight=False,
        )
    console.print(f"use them with ATOMDIFF_SHARED_DATA={escape(str(output))}", highlight=False)
