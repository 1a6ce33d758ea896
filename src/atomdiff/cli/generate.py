"""``atomdiff generate``: crystal structures from a diffusion model, under composition constraints."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from atomdiff.cli.options import DEFAULT_REPULSION, DeviceOpt, RepulsionOpt, Seed, network_on
from atomdiff.errors import InputError

console = Console()

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Model folder (model.safetensors + config.json) or shipped name.")
]
Steps = Annotated[int, typer.Option("--steps", min=1, help="Denoising steps (cost is proportional).")]
SamplerOpt = Annotated[
    str, typer.Option("--sampler", help="pc (predictor-corrector SDE) or ode (probability-flow ODE).")
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="At most this many structures per model call.")]


def parse_atoms(text: str | None) -> tuple[int, int] | None:
    """``"5-10"`` → ``(5, 10)``; ``"5"`` → ``(5, 5)``."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise InputError(f"--atoms: write a count or a range like 5-10, got {text!r}")
    lo = int(m.group(1))
    return lo, int(m.group(2)) if m.group(2) else lo


def build_constraint(
    formula: str | None, elements: str | None, exclude: str | None, atoms: str | None, counts: str | None = None
):
    """The :class:`CompositionConstraint` of the chemistry options shared by ``generate`` and ``solve``."""
    from atomdiff.diffusion.constraints import CompositionConstraint, parse_count_ranges, parse_formula
    from atomdiff.structure.elements import parse_element_list

    return CompositionConstraint(
        formula=parse_formula(formula) if formula else None,
        required=frozenset(parse_element_list(elements)) if elements else frozenset(),
        excluded=frozenset(parse_element_list(exclude)) if exclude else frozenset(),
        count_ranges=parse_count_ranges(counts) if counts else {},
        atoms=parse_atoms(atoms),
    )


def check_sampler(sampler: str) -> str:
    if sampler not in ("pc", "ode"):
        raise InputError(f"--sampler must be 'pc' or 'ode', got {sampler!r}")
    return sampler


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[float, float], None]]:
    """A rich progress bar; yields ``update(completed, total)``."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=None)

        def update(completed: float, total: float) -> None:
            bar.update(task, completed=completed, total=total)

        yield update


def generate(
    model: ModelOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (CIFs, samples.extxyz, summary.csv).")],
    formula: Annotated[
        str | None, typer.Option(help="Exact formula unit, e.g. CaTiO3 (cells hold whole units within --atoms).")
    ] = None,
    elements: Annotated[str | None, typer.Option(help="Elements that must appear, e.g. Ca,Ti.")] = None,
    exclude: Annotated[str | None, typer.Option(help="Elements that must not appear, e.g. F,N.")] = None,
    counts: Annotated[str | None, typer.Option(help="Atoms per element and cell, e.g. O:2-3,Ti:1.")] = None,
    atoms: Annotated[str | None, typer.Option(help="Atoms per cell: 5-10 or 5.")] = None,
    number: Annotated[int, typer.Option("-n", "--number", min=1, help="Number of structures.")] = 20,
    steps: Steps = 200,
    sampler: SamplerOpt = "pc",
    seed: Seed = 0,
    batch_size: BatchSize = 256,
    overwrite: Annotated[bool, typer.Option(help="Replace the samples of an earlier run in the folder.")] = False,
    repulsion: RepulsionOpt = DEFAULT_REPULSION,
    device: DeviceOpt = "cpu",
) -> None:
    """Generate crystal structures: one CIF each, samples.extxyz and summary.csv in the output folder."""
    from atomdiff.tasks.generate import check_output_folder
    from atomdiff.tasks.generate import generate as run_generate
    from atomdiff.weights import load_crystal_model

    constraint = build_constraint(formula, elements, exclude, atoms, counts)
    check_sampler(sampler)
    check_output_folder(output, overwrite)
    diffusion = network_on(load_crystal_model(model), device)
    with progress_bar("denoising") as update:
        structures = run_generate(
            diffusion,
            number,
            output,
            constraint,
            steps=steps,
            sampler=sampler,
            seed=seed,
            batch_size=batch_size,
            overwrite=overwrite,
            progress=update,
            repulsion=repulsion,
        )
    formulas = sorted({s.formula for s in structures})
    shown = ", ".join(formulas[:8]) + (" ..." if len(formulas) > 8 else "")
    console.print(f"wrote {len(structures)} structures ({shown}) to {output}")
