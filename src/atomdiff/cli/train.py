"""``atomdiff train crystal``: train a crystal diffusion model (the work is in :mod:`atomdiff.training`).

Settings are resolved in this order, later winning: defaults < the run's saved ``config.json`` (with
``--resume``) < ``--config`` file (JSON or TOML, keys of :class:`~atomdiff.training.config.TrainConfig`;
relative data paths are relative to the file) < ``--set key=value`` < explicit options (``--max-steps`` ...).
"""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from atomdiff.errors import InputError
from atomdiff.training.config import TrainConfig

app = typer.Typer(help="Train diffusion models on structure files: crystal.", no_args_is_help=True)

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


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "data=a.csv,b.csv", "limit=none"]`` → typed values of :class:`TrainConfig` fields."""
    types = TrainConfig.field_types()
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
    out: Path, resume: bool, config_file: Path | None, sets: list[str], explicit: dict[str, Any]
) -> TrainConfig:
    """Defaults < saved run config (``resume``) < config file < ``--set`` < explicit options (not ``None``)."""
    config = TrainConfig()
    saved = out / "config.json"
    if resume and saved.is_file():
        config = TrainConfig.from_dict(json.loads(saved.read_text()))
    if config_file is not None:
        config = TrainConfig.from_dict(read_config_file(config_file), config)
    config = TrainConfig.from_dict(parse_set(sets), config)
    given = {k: v for k, v in explicit.items() if v is not None}
    if "data" in given:
        given["data"] = [str(Path(p).resolve()) for p in given["data"]]
    return TrainConfig.from_dict(given, config)


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
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: config, data cache, checkpoints, logs, model.")],
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", "-d", help="Training structures (CSV of CIFs, extxyz, CIF); repeat for more files."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Settings file, .json or .toml.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one setting, KEY=VALUE (repeatable).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from RUN_DIR/checkpoints/last.ckpt.")] = False,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps to train for (-1: no limit).")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Epochs to train for (-1: no limit).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Structures per batch and device.")] = None,
    hidden: Annotated[int | None, typer.Option(help="Width of the score network.")] = None,
    layers: Annotated[int | None, typer.Option(help="Message-passing layers of the score network.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (AdamW).")] = None,
    ckpt_every: Annotated[int | None, typer.Option(help="Optimizer steps between checkpoints.")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Fraction of the data held out for validation.")] = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many structures from each file.")] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu or gpu.")] = None,
    devices: Annotated[int | None, typer.Option(help="Devices per node (DDP when more than one).")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="Nodes (DDP).")] = None,
    precision: Annotated[str | None, typer.Option(help="Lightning precision: 32-true, bf16-mixed, ...")] = None,
    num_workers: Annotated[int | None, typer.Option(help="Data-loader worker processes.")] = None,
    cpu_threads: Annotated[int | None, typer.Option(help="Torch threads per process (0: default).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialisation, shuffling and noise.")] = None,
) -> None:
    """Train a crystal diffusion model; the EMA weights are exported to RUN_DIR/model.

    Settings, later winning: defaults < RUN_DIR/config.json (with --resume) < --config file < --set < options.
    """
    explicit = {
        "data": data,
        "max_steps": max_steps,
        "max_epochs": max_epochs,
        "batch_size": batch_size,
        "hidden": hidden,
        "layers": layers,
        "lr": lr,
        "ckpt_every": ckpt_every,
        "val_fraction": val_fraction,
        "limit": limit,
        "accelerator": accelerator,
        "devices": devices,
        "num_nodes": num_nodes,
        "precision": precision,
        "num_workers": num_workers,
        "cpu_threads": cpu_threads,
        "seed": seed,
    }
    sets = list(set_ or [])
    settings = resolve_config(out, resume, config, sets, explicit)
    from atomdiff.training.run import train_crystal  # imports Lightning: only when training

    model_dir = train_crystal(
        settings, out, resume=resume, command=_command_line(ctx, out, config, sets, resume, explicit)
    )
    if model_dir is not None:
        typer.echo(f"model written to {model_dir}")
