"""``atomdiff data``: make training data (random symmetric crystals relaxed with CHGNet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from atomdiff.cli.options import Seed
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
    seed: Seed = 0,
) -> None:
    """Random symmetric crystals (PyXtal) relaxed with CHGNet; resumable; writes OUT/train.csv for training."""
    from atomdiff.cli.progress import stage_bars
    from atomdiff.data.generate import SYSTEMS, CrystalDataGenerator

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
    compositions = [c for n in names for c in SYSTEMS[n]] + list(formula or [])
    generator = CrystalDataGenerator(output, compositions, per_composition, max_atoms, relax_steps, energy_window, seed)
    with stage_bars(("relax",)) as update:
        computed = generator.run(lambda done, total: update("relax", done, total))
    kept, relaxed = generator.finish()
    console.print(
        f"relaxed {computed} now ({relaxed} in all); kept {kept} within {energy_window} eV/atom: {output / 'train.csv'}"
    )
