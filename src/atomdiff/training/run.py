"""One training run, from a resolved config to an exported model (crystal diffusion here; the local models in
:mod:`atomdiff.training.local`).

Layout of a run directory::

    RUN_DIR/config.json            the resolved settings
    RUN_DIR/data_cache/*.npz       parsed structures (so a resumed run does not re-parse CSVs)
    RUN_DIR/checkpoints/last.ckpt  latest checkpoint (plus step=N.ckpt), with the EMA state
    RUN_DIR/logs/version_K/metrics.csv   per-step metrics, one version per (re)start
    RUN_DIR/model/                 EMA weights: model.safetensors + config.json (CrystalDiffusion.load)

Multi-device runs use DDP. Lightning's default launcher re-runs the same command line once per extra local
rank (with ``LOCAL_RANK`` set), so everything before ``Trainer.fit`` runs in every rank: only rank zero
checks and writes the run directory; the others read the data cache that rank zero wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch

from atomdiff.diffusion.crystal import CrystalDiffusion, DataStatistics
from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.models.crystal import CrystalNetConfig
from atomdiff.models.pattern_encoder import PatternEncoderConfig
from atomdiff.training.config import RunConfig, TrainConfig
from atomdiff.training.datamodules import (
    StructureDataModule,
    collate_conditioned,
    collate_structures,
    load_structures,
    split_structures,
)
from atomdiff.training.export import export, hardware_info, model_from_config, read_checkpoint
from atomdiff.training.lightning import (
    CrystalDiffusionModule,
    EMATrainingModule,
    FinalCheckpoint,
    LocalModelModule,
    StepDelay,
)


def is_launch_rank_zero() -> bool:
    """Whether this process is global rank zero (judged from the launcher's environment variables)."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    node = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")))
    if "LOCAL_RANK" in env:
        return int(env["LOCAL_RANK"]) == 0 and node == 0
    if "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]) == 0
    return node == 0


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to start over a run with checkpoints, or to resume one without."""
    ckpt_dir = run_dir / "checkpoints"
    if resume:
        if not (ckpt_dir / "last.ckpt").is_file():
            raise InputError("nothing to resume: no checkpoints/last.ckpt in the run folder", path=str(run_dir))
    elif ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
        raise InputError(
            "run folder already holds checkpoints; pass --resume to continue it or choose another --out",
            path=str(run_dir),
        )


def build_trainer(config: RunConfig, run_dir: Path, has_val: bool) -> L.Trainer:
    """A Trainer with CSV metrics, periodic + last checkpoints, gradient clipping and DDP when needed."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    ckpt_dir = run_dir / "checkpoints"
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="{step}",
            save_last=True,
            save_top_k=1,
            every_n_train_steps=config.ckpt_every,
            enable_version_counter=False,
        ),
        FinalCheckpoint(ckpt_dir / "last.ckpt", config.ckpt_every),
    ]
    delay = StepDelay.from_env()
    if delay is not None:
        callbacks.append(delay)
    multi = config.devices == -1 or config.devices * config.num_nodes > 1
    val_kwargs = {"limit_val_batches": 0} if not has_val else {}
    if has_val and config.val_every > 0:
        val_kwargs = {"val_check_interval": config.val_every, "check_val_every_n_epoch": None}
    return L.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy="ddp" if multi else "auto",
        precision=config.precision,
        max_steps=config.max_steps,
        max_epochs=config.max_epochs,
        gradient_clip_val=config.grad_clip or None,
        logger=CSVLogger(save_dir=run_dir, name="logs", flush_logs_every_n_steps=1),
        callbacks=callbacks,
        log_every_n_steps=1,
        enable_progress_bar=config.progress_bar,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
        **val_kwargs,
    )


def _encoder_settings() -> dict:
    """Network settings that add a pattern encoder (:class:`PatternEncoderConfig` defaults)."""
    encoder = PatternEncoderConfig()
    return {"cond_dim": encoder.cond_dim, "encoder": dataclasses.asdict(encoder)}


def _init_model(config: TrainConfig, train_structures: list) -> CrystalDiffusion:
    """The crystal model named by ``config.init``, with a pattern encoder added when ``config.patterns`` > 0.

    The lattice normalisation stays the base model's (its weights were learned in it); the atom counts, cell
    contents, primitive contents and volume per atom become those of the new training data (what the sampler draws
    and a solve proposes), and the elements those of both."""
    from atomdiff.weights import load_crystal_model

    base = load_crystal_model(config.init)
    net = base.net.config
    if config.patterns and net.encoder is None:
        net = dataclasses.replace(net, **_encoder_settings())
    new = _statistics(config, train_structures)
    stats = dataclasses.replace(
        base.stats,
        atom_counts=new.atom_counts,
        elements=sorted(set(base.stats.elements) | set(new.elements)),
        cells=new.cells,
        volume_per_atom=new.volume_per_atom,
        primitive_cells=new.primitive_cells,
    )
    model = CrystalDiffusion(net, stats, base.frac_noise.sigma_min, base.frac_noise.sigma_max)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not k.startswith(("net.cond.", "net.pattern_encoder.")) for k in missing):
        raise InputError(f"cannot start from {config.init}: weights do not fit ({unexpected[:3]} {missing[:3]})")
    if missing:  # a new conditioning layer starts at zero: the model starts as the unconditional one
        torch.nn.init.zeros_(model.net.cond.weight)
        torch.nn.init.zeros_(model.net.cond.bias)
    return model


def _statistics(config: TrainConfig, structures: list) -> DataStatistics:
    """:meth:`DataStatistics.from_structures`, with a progress bar when the run shows one."""
    if not config.progress_bar:
        return DataStatistics.from_structures(structures)
    from rich.progress import Progress

    with Progress() as bar:
        task = bar.add_task("data statistics (primitive cells)", total=len(structures))
        return DataStatistics.from_structures(structures, lambda done, total: bar.update(task, completed=done))


def _build_model(config: TrainConfig, train_structures: list, resume_from: Path | None) -> CrystalDiffusion:
    if resume_from is None:
        if config.init:
            return _init_model(config, train_structures)
        extra = _encoder_settings() if config.patterns else {}
        net = CrystalNetConfig(hidden=config.hidden, layers=config.layers, **extra)
        return CrystalDiffusion(net, _statistics(config, train_structures))
    model_config = read_checkpoint(resume_from)["atomdiff"]["model_config"]
    for key in ("hidden", "layers"):
        if not config.init and model_config["net"][key] != getattr(config, key):
            raise InputError(
                f"cannot change {key} when resuming (checkpoint has {model_config['net'][key]}, "
                f"settings say {getattr(config, key)})",
                path=str(resume_from),
            )
    if bool(config.patterns) != bool(model_config["net"].get("encoder")):
        raise InputError("cannot switch pattern conditioning on or off when resuming", path=str(resume_from))
    return CrystalDiffusion.from_config(model_config)


def _with_patterns(
    structures: list, config: TrainConfig, cache: Path, name: str, seed: int, write_cache: bool
) -> list[tuple]:
    """``(structure, features, radiation)`` items with ``config.patterns`` simulated patterns each, cached in
    ``cache`` (keyed by the structures, the number of patterns and the seed)."""
    from atomdiff.data.generate.patterns import simulate_training_patterns

    encoder = PatternEncoderConfig()
    digest = hashlib.sha256()
    for s in structures:
        for array in (s.numbers, s.frac, s.cell):
            digest.update(np.ascontiguousarray(array).tobytes())
    key = f"{digest.hexdigest()[:16]}_{config.patterns}_{seed}_{config.neutron_fraction}_{encoder.n_q}"
    file = cache / f"patterns_{name}_{key}.npz"
    if file.exists():
        with np.load(file) as data:
            feats, rads = data["features"].astype(np.float32), data["radiation"]
    else:
        with contextlib.ExitStack() as stack:
            update = None
            if config.progress_bar and write_cache:
                from rich.progress import Progress

                bar = stack.enter_context(Progress())
                task = bar.add_task(f"simulating {name} patterns", total=None)

                def update(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

            feats, rads = simulate_training_patterns(
                structures,
                config.patterns,
                encoder,
                seed=seed,
                neutron_fraction=config.neutron_fraction,
                progress=update,
            )
        feats = feats.astype(np.float16).astype(np.float32)  # as a resumed run reads them from the cache
        if write_cache:
            cache.mkdir(parents=True, exist_ok=True)
            with atomic_path(file) as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, features=feats.astype(np.float16), radiation=rads)
    return [(s, feats[i], rads[i]) for i, s in enumerate(structures)]


def prepare_run(config: RunConfig, run_dir: str | os.PathLike, resume: bool) -> tuple[Path, bool]:
    """Validate, check and record the run folder; set the thread count. Returns ``(run_dir, rank_zero)``."""
    config.validate()
    run_dir = Path(run_dir).resolve()
    rank_zero = is_launch_rank_zero()
    if rank_zero or resume:
        check_run_dir(run_dir, resume)
    if rank_zero:
        with atomic_path(run_dir / "config.json") as tmp:
            tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if config.cpu_threads > 0:  # also for DDP ranks launched from here (Lightning respects OMP_NUM_THREADS)
        os.environ["OMP_NUM_THREADS"] = str(config.cpu_threads)
        torch.set_num_threads(config.cpu_threads)
    return run_dir, rank_zero


def resumed_model(run_dir: Path) -> torch.nn.Module:
    """The model of a run's last checkpoint, built from the configuration stored in it (weights come from fit)."""
    return model_from_config(read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["atomdiff"]["model_config"])


def local_module(model: torch.nn.Module, config: RunConfig, noise_weighting: bool = False) -> LocalModelModule:
    """The Lightning module of a model whose ``loss(batch, generator)`` needs nothing else."""
    return LocalModelModule(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        cosine=config.schedule == "cosine",
        ema_decay=config.ema_decay,
        seed=config.seed,
        noise_weighting=noise_weighting,
    )


def fit_run(
    config: RunConfig,
    run_dir: Path,
    module: EMATrainingModule,
    data: StructureDataModule,
    n_train: int,
    n_val: int,
    resume: bool,
    command: str,
) -> Path | None:
    """Fit ``module`` on ``data`` (resuming from ``last.ckpt``) and export its EMA weights to ``RUN_DIR/model``.

    Returns the model folder on global rank zero, ``None`` on other ranks.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    trainer = build_trainer(config, run_dir, has_val=n_val > 0)
    accelerator = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
    module.training_info = {
        "command": command,
        "config": config.to_dict(),
        "n_train": n_train,
        "n_val": n_val,
        "hardware": hardware_info(accelerator, trainer.num_devices, trainer.num_nodes, trainer.world_size),
    }
    if getattr(config, "init", ""):  # a fine-tuned model keeps the record of the one it started from
        from atomdiff.weights import training_record

        module.training_info["init"] = {"model": config.init, "training": training_record(config.init)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None, weights_only=True)
    if not trainer.is_global_zero:
        return None
    return export(last, run_dir / "model", template=module.model)


def train_crystal(
    config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False, command: str = ""
) -> Path | None:
    """Train (or, with ``resume``, continue) a crystal diffusion model in ``run_dir``.

    Returns the exported model folder ``RUN_DIR/model`` on global rank zero, ``None`` on other ranks.
    """
    run_dir, rank_zero = prepare_run(config, run_dir, resume)
    last = run_dir / "checkpoints" / "last.ckpt"
    cache = run_dir / "data_cache"
    structures = load_structures(config.data, cache, config.limit, write_cache=rank_zero)
    if config.val_data:
        train, val = structures, load_structures(config.val_data, cache, config.limit, write_cache=rank_zero)
    else:
        train, val = split_structures(structures, config.val_fraction, config.seed)

    L.seed_everything(config.seed, workers=True, verbose=False)
    model = _build_model(config, train, last if resume else None)
    module = CrystalDiffusionModule(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        cosine=config.schedule == "cosine",
        csp_fraction=config.csp_fraction,
        ema_decay=config.ema_decay,
        weight_frac=config.weight_frac,
        weight_lattice=config.weight_lattice,
        weight_species=config.weight_species,
        seed=config.seed,
        cond_dropout=config.cond_dropout,
    )
    collate = collate_structures
    if config.patterns:
        train = _with_patterns(train, config, cache, "train", config.seed, rank_zero)
        val = _with_patterns(val, config, cache, "val", config.seed + 1, rank_zero) if val else val
        collate = collate_conditioned
    data = StructureDataModule(train, val, config.batch_size, config.num_workers, config.seed, collate)
    return fit_run(config, run_dir, module, data, len(train), len(val), resume, command)
