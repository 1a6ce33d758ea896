"""``atomdiff voxel``: grand-canonical diffusion on periodic voxel fields (the atom count is generated).

``train`` fits a model on structures that all fill one box (e.g. ``atomdiff data ordered``) through the shared
training stack; ``generate`` samples one (default: the shipped ``voxel_ordered`` when installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from atomdiff.cli.generate import progress_bar
from atomdiff.cli.options import GuidanceInterval, Seed, parse_interval
from atomdiff.cli.train import (
    Accelerator,
    CkptEvery,
    ConfigFile,
    CpuThreads,
    Devices,
    LearningRate,
    MaxSteps,
    Precision,
    Resume,
    RunOut,
    SetOption,
    TrainSeed,
    ValFraction,
    _command_line,
    explicit_options,
    resolve_config,
)
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
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Voxel model folder or shipped name (default: voxel_ordered)."),
    ] = None,
    phase: Annotated[
        str | None,
        typer.Option(
            "--phase",
            help="Class label(s) of a class-conditioned model, comma-separated and cycled over the samples "
            "(e.g. fcc or fcc,bcc); 'any' samples unconditionally. Default: cycle through all the model's classes.",
        ),
    ] = None,
    guidance: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Classifier-free guidance weight of a class-conditioned model (1: conditional only; the default 2 "
            "made the most perfect crystals of the phase asked for with voxel_ordered, docs/voxel.md).",
        ),
    ] = 2.0,
    guidance_interval: GuidanceInterval = None,
) -> None:
    """Sample voxel fields and decode them into structures: one CIF each, samples.extxyz and summary.csv."""
    import torch

    from atomdiff.diffusion.voxel import SAMPLERS
    from atomdiff.tasks.generate import check_output_folder, write_samples
    from atomdiff.weights import load_voxel_model

    if sampler not in SAMPLERS:
        raise InputError(f"--sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    grid_shape = parse_shape(shape)
    check_output_folder(output, overwrite)
    diffusion = load_voxel_model(model)
    labels = requested_labels(diffusion.classes, phase, number)
    with progress_bar("denoising") as update:
        structures = diffusion.generate_structures(
            number,
            shape=grid_shape,
            steps=steps,
            generator=torch.Generator().manual_seed(seed),
            progress=update,
            sampler=sampler,
            labels=labels,
            guidance=guidance,
            guidance_interval=parse_interval(guidance_interval),
        )
    for s, label in zip(structures, labels or [None] * number, strict=True):
        if label is not None:
            s.info["requested_phase"] = label
    write_samples(structures, output, overwrite)
    counts = ", ".join(str(len(s)) for s in structures)
    console.print(f"wrote {len(structures)} structure(s) to {output}; atoms per structure: {counts}")


def requested_labels(classes: tuple[str, ...], phase: str | None, number: int) -> list[str] | None:
    """The class of each of ``number`` samples from ``--phase`` (``None``: unconditional); the model checks the
    names."""
    if phase is None:
        return [classes[k % len(classes)] for k in range(number)] if classes else None
    if phase.strip().lower() == "any":
        return None
    names = [p.strip() for p in phase.split(",") if p.strip()]
    if not names:
        raise InputError(f"--phase: give phase names like fcc or fcc,bcc, got {phase!r}")
    return [names[k % len(names)] for k in range(number)]


@app.command("train")
def train(
    ctx: typer.Context,
    out: RunOut,
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", "-d", help="Structures that all fill one box (extxyz, CIF, ...); repeatable."),
    ] = None,
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = False,
    max_steps: MaxSteps = None,
    batch_size: Annotated[int | None, typer.Option(help="Boxes per batch and device.")] = None,
    lr: LearningRate = None,
    grid: Annotated[
        str | None, typer.Option(help="Voxels per box edge, e.g. 48 or 48,48,64 (default: --spacing).")
    ] = None,
    spacing: Annotated[float | None, typer.Option(help="Largest voxel edge, Å, when --grid is not given.")] = None,
    sigma: Annotated[float | None, typer.Option(help="Width of the Gaussian of each atom, Å.")] = None,
    base: Annotated[int | None, typer.Option(help="Channels of the U-Net's first level.")] = None,
    mults: Annotated[str | None, typer.Option(help="Channel multipliers of the U-Net's levels, e.g. 1,2,2.")] = None,
    ckpt_every: CkptEvery = None,
    val_fraction: ValFraction = None,
    accelerator: Accelerator = None,
    devices: Devices = None,
    precision: Precision = None,
    num_workers: Annotated[int | None, typer.Option(help="Data-loader worker processes (encode fields).")] = None,
    cpu_threads: CpuThreads = None,
    seed: TrainSeed = None,
) -> None:
    """Train a voxel diffusion model on structures in one box; the EMA weights are exported to RUN_DIR/model.

    Settings, later winning: defaults < RUN_DIR/config.json (with --resume) < --config file < --set < options.
    """
    from atomdiff.training.config import VoxelTrainConfig

    explicit = explicit_options(ctx)
    sets = list(set_ or [])
    settings = resolve_config(out, resume, config, sets, explicit, VoxelTrainConfig)
    from atomdiff.training.voxel import train_voxel  # imports Lightning: only when training

    model_dir = train_voxel(
        settings, out, resume=resume, command=_command_line(ctx, out, config, sets, resume, explicit)
    )
    if model_dir is not None:
        console.print(f"model written to {model_dir}")
