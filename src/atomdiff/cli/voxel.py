"""``atomdiff voxel``: grand-canonical diffusion on periodic voxel fields (the atom count is generated).

Only ``generate`` exists so far; ``train`` and the shipped default model come with the ordered-phase
experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from atomdiff.cli.generate import progress_bar
from atomdiff.cli.options import Seed
from atomdiff.errors import InputError

console = Console()

app = typer.Typer(
    help="Grand-canonical diffusion on periodic voxel fields: the number of atoms is generated, not fixed.",
    no_args_is_help=True,
)


def parse_shape(text: str | None) -> tuple[int, int, int] | None:
    """``"32,32,48"`` → ``(32, 32, 48)``; ``"32"`` → ``(32, 32, 32)``."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--shape: write grid sizes like 32,32,48, got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or min(values) < 1:
        raise InputError(f"--shape: write three positive grid sizes like 32,32,48, got {text!r}")
    return values[0], values[1], values[2]


@app.command("generate")
def generate(
    model: Annotated[Path, typer.Option("--model", "-m", help="Voxel model folder (model.safetensors + config.json).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (CIFs, samples.extxyz, summary.csv).")],
    number: Annotated[int, typer.Option("-n", "--number", min=1, help="Number of structures.")] = 8,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Denoising steps (cost is proportional).")] = 100,
    sampler: Annotated[str, typer.Option("--sampler", help="ddpm (ancestral) or ddim (deterministic).")] = "ddpm",
    shape: Annotated[
        str | None,
        typer.Option("--shape", help="Grid of the samples, e.g. 32,32,64 (a larger box); default: the model's."),
    ] = None,
    seed: Seed = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace the samples of an earlier run in the folder.")] = False,
) -> None:
    """Sample voxel fields and decode them into structures: one CIF each, samples.extxyz and summary.csv."""
    import torch

    from atomdiff.diffusion.voxel import SAMPLERS, VoxelDiffusion
    from atomdiff.tasks.generate import check_output_folder, write_samples

    if sampler not in SAMPLERS:
        raise InputError(f"--sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    grid_shape = parse_shape(shape)
    check_output_folder(output, overwrite)
    diffusion = VoxelDiffusion.load(model)
    with progress_bar("denoising") as update:
        structures = diffusion.generate_structures(
            number,
            shape=grid_shape,
            steps=steps,
            generator=torch.Generator().manual_seed(seed),
            progress=update,
            sampler=sampler,
        )
    write_samples(structures, output, overwrite)
    counts = ", ".join(str(len(s)) for s in structures)
    console.print(f"wrote {len(structures)} structure(s) to {output}; atoms per structure: {counts}")
