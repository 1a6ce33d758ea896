"""``atomdiff train crystal|amorphous|xanes``: train a model (the work is in :mod:`atomdiff.training`).

Settings are resolved in this order, later winning: defaults < the run's saved ``config.json`` (with
``--resume``) < ``--config`` file (JSON or TOML, keys of the command's config class in
:mod:`atomdiff.training.config`; relative data paths are relative to the file) < ``--set key=value`` < explicit
options (``--max-steps`` ...).
"""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from atomdiff.errors import InputError
from atomdiff.training.config import LocalTrainConfig, RunConfig, TrainConfig, XanesTrainConfig

app = typer.Typer(help="Train models: crystal diffusion, amorphous diffusion, XANES surrogates.", no_args_is_help=True)

# Options shared by the training commands (here and in ``atomdiff voxel train``).
RunOut = Annotated[Path, typer.Option("--out", "-o", help="Run folder: config, checkpoints, logs, model.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="Settings file, .json or .toml.")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override one setting, KEY=VALUE (repeatable).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from RUN_DIR/checkpoints/last.ckpt.")]
MaxSteps = Annotated[int | None, typer.Option(help="Optimizer steps to train for (-1: no limit).")]
LearningRate = Annotated[float | None, typer.Option(help="Peak learning rate (AdamW).")]
CkptEvery = Annotated[int | None, typer.Option(help="Optimizer steps between checkpoints.")]
ValFraction = Annotated[float | None, typer.Option(help="Fraction of the data held out for validation.")]
Accelerator = Annotated[str | None, typer.Option(help="auto, cpu or gpu.")]
Devices = Annotated[int | None, typer.Option(help="Devices per node (DDP when more than one).")]
NumNodes = Annotated[int | None, typer.Option(help="Nodes (DDP).")]
Precision = Annotated[str | None, typer.Option(help="Lightning precision: 32-true, bf16-mixed, ...")]
NumWorkers = Annotated[int | None, typer.Option(help="Data-loader worker processes.")]
CpuThreads = Annotated[int | None, typer.Option(help="Torch threads per process (0: default).")]
TrainSeed = Annotated[int | None, typer.Option(help="Seed of initialisation, shuffling and noise.")]
Hidden = Annotated[int | None, typer.Option(help="Feature width of the network.")]
Layers = Annotated[int | None, typer.Option(help="Message-passing layers (interaction blocks).")]
Cutoff = Annotated[float | None, typer.Option(help="Neighbour cutoff, Å.")]

_PATH_KEYS = ("data", "val_data")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a ``.json`` or ``.toml`` file; relative data paths are taken relative to the file."""
    if not path.is_file():
        raise InputError("config file not found", path=str(path))
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(path.read_text())
        elif path.suffix.lower() == ".toml":
            values = tomllib.loads(path.read_text())
        else:
            raise InputError("config file must end in .json or .toml", path=str(path))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot parse config file: {exc}", path=str(path)) from None
    if not isinstance(values, dict):
        raise InputError("config file must hold a table of settings", path=str(path))
    for key in _PATH_KEYS:
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
        if isinstance(values.get(key), list):
            values[key] = [str((path.parent / p).resolve()) if isinstance(p, str) else p for p in values[key]]
    return values


def parse_set(items: list[str], cls: type[RunConfig] = TrainConfig) -> dict[str, Any]:
    """``["lr=1e-3", "data=a.csv,b.csv", "limit=none"]`` → typed values of the fields of ``cls``."""
    types = cls.field_types()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in types:
            raise InputError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(types)}")
        kind, text = types[key], text.strip()
        try:
            if kind == list[str]:
                out[key] = [str(Path(p).resolve()) if key in _PATH_KEYS else p for p in text.split(",") if p]
            elif kind == int | None:
                out[key] = None if text.lower() in ("", "none", "null") else int(text)
            elif kind is bool:
                if text.lower() not in _TRUE + _FALSE:
                    raise ValueError(text)
                out[key] = text.lower() in _TRUE
            else:
                out[key] = kind(text)
        except ValueError:
            raise InputError(f"--set {item!r}: {key} must be {getattr(kind, '__name__', kind)}") from None
    return out


def resolve_config(
    out: Path,
    resume: bool,
    config_file: Path | None,
    sets: list[str],
    explicit: dict[str, Any],
    cls: type[RunConfig] = TrainConfig,
) -> RunConfig:
    """Defaults < saved run config (``resume``) < config file < ``--set`` < explicit options (not ``None``)."""
    config = cls()
    saved = out / "config.json"
    if resume and saved.is_file():
        config = cls.from_dict(json.loads(saved.read_text()))
    if config_file is not None:
        config = cls.from_dict(read_config_file(config_file), config)
    config = cls.from_dict(parse_set(sets, cls), config)
    given = {k: v for k, v in explicit.items() if v is not None}
    if "data" in given:
        given["data"] = [str(Path(p).resolve()) for p in given["data"]]
    return cls.from_dict(given, config)


_RUN_PARAMS = ("ctx", "out", "config", "set_", "resume")


def explicit_options(ctx: typer.Context) -> dict[str, Any]:
    """The command's setting options by name (``None`` when not given): every parameter but the run's own.

    Click reports a repeatable option that was not given as ``()``; it is ``None`` here, as in the function.
    """
    return {
        k: (list(v) if v else None) if isinstance(v, tuple | list) else v
        for k, v in ctx.params.items()
        if k not in _RUN_PARAMS
    }


def _command_line(
    ctx: typer.Context, out: Path, config: Path | None, sets: list[str], resume: bool, explicit: dict
) -> str:
    """The command as given (options that were set), for the record in the exported model."""
    parts = ["--out", str(out)]
    for p in explicit.get("data") or []:
        parts += ["--data", str(p)]
    if config is not None:
        parts += ["--config", str(config)]
    for item in sets:
        parts += ["--set", item]
    if resume:
        parts.append("--resume")
    for key, value in explicit.items():
        if key != "data" and value is not None:
            parts += [f"--{key.replace('_', '-')}", str(value)]
    return f"{ctx.command_path} {shlex.join(parts)}"


@app.command("crystal")
def crystal(
    ctx: typer.Context,
    out: RunOut,
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", "-d", help="Training structures (CSV of CIFs, extxyz, CIF); repeat for more files."),
    ] = None,
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = False,
    max_steps: MaxSteps = None,
    max_epochs: Annotated[int | None, typer.Option(help="Epochs to train for (-1: no limit).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Structures per batch and device.")] = None,
    hidden: Annotated[int | None, typer.Option(help="Width of the score network.")] = None,
    layers: Annotated[int | None, typer.Option(help="Message-passing layers of the score network.")] = None,
    lr: LearningRate = None,
    ckpt_every: CkptEvery = None,
    val_fraction: ValFraction = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many structures from each file.")] = None,
    accelerator: Accelerator = None,
    devices: Devices = None,
    num_nodes: NumNodes = None,
    precision: Precision = None,
    num_workers: NumWorkers = None,
    cpu_threads: CpuThreads = None,
    seed: TrainSeed = None,
) -> None:
    """Train a crystal diffusion model; the EMA weights are exported to RUN_DIR/model.

    Settings, later winning: defaults < RUN_DIR/config.json (with --resume) < --config file < --set < options.
    """
    explicit = explicit_options(ctx)
    sets = list(set_ or [])
    settings = resolve_config(out, resume, config, sets, explicit)
    from atomdiff.training.run import train_crystal  # imports Lightning: only when training

    model_dir = train_crystal(
        settings, out, resume=resume, command=_command_line(ctx, out, config, sets, resume, explicit)
    )
    if model_dir is not None:
        typer.echo(f"model written to {model_dir}")


def _local(
    ctx: typer.Context,
    cls: type[LocalTrainConfig],
    train,
    out: Path,
    config: Path | None,
    set_: list[str] | None,
    resume: bool,
) -> None:
    explicit = explicit_options(ctx)
    sets = list(set_ or [])
    settings = resolve_config(out, resume, config, sets, explicit, cls)
    model_dir = train(settings, out, resume=resume, command=_command_line(ctx, out, config, sets, resume, explicit))
    if model_dir is not None:
        typer.echo(f"model written to {model_dir}")


@app.command("amorphous")
def amorphous(
    ctx: typer.Context,
    out: RunOut,
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", "-d", help="Data-set folder (ROOT/poscar/<split>/) or structure file; repeatable."),
    ] = None,
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = False,
    max_steps: MaxSteps = None,
    batch_size: Annotated[int | None, typer.Option(help="Cells per batch and device.")] = None,
    hidden: Hidden = None,
    layers: Layers = None,
    cutoff: Cutoff = None,
    lr: LearningRate = None,
    accelerator: Accelerator = None,
    devices: Devices = None,
    cpu_threads: CpuThreads = None,
    seed: TrainSeed = None,
) -> None:
    """Train the position-diffusion prior of amorphous materials; EMA weights go to RUN_DIR/model."""
    from atomdiff.training.local import train_amorphous  # imports Lightning: only when training

    _local(ctx, LocalTrainConfig, train_amorphous, out, config, set_, resume)


@app.command("xanes")
def xanes(
    ctx: typer.Context,
    out: RunOut,
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", "-d", help="Data-set folder with poscar/<split>/ and xanes/<split>/; repeatable."),
    ] = None,
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = False,
    absorber: Annotated[str | None, typer.Option(help="Absorbing element (symbol).")] = None,
    edge: Annotated[str | None, typer.Option(help="Absorption edge, recorded with the model.")] = None,
    max_steps: MaxSteps = None,
    batch_size: Annotated[int | None, typer.Option(help="Structures per batch and device.")] = None,
    hidden: Hidden = None,
    layers: Layers = None,
    cutoff: Cutoff = None,
    lr: LearningRate = None,
    accelerator: Accelerator = None,
    devices: Devices = None,
    cpu_threads: CpuThreads = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialisation and shuffling.")] = None,
) -> None:
    """Train a structure → per-atom XANES surrogate; EMA weights go to RUN_DIR/model."""
    from atomdiff.training.local import train_xanes  # imports Lightning: only when training

    _local(ctx, XanesTrainConfig, train_xanes, out, config, set_, resume)
