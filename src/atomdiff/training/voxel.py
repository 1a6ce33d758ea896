"""Training run of a :class:`~atomdiff.diffusion.voxel.VoxelDiffusion`: structures in one box, encoded to voxel
fields batch by batch, through the shared Lightning stack (:mod:`atomdiff.training.run`: checkpoints, resume,
EMA export to ``RUN_DIR/model``)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from atomdiff.diffusion.noise.voxel import VoxelNoise
from atomdiff.diffusion.voxel import VoxelBatch, VoxelDiffusion
from atomdiff.errors import InputError
from atomdiff.models.voxel_unet import VoxelUNet, VoxelUNetConfig
from atomdiff.representations.voxel import VoxelGrid
from atomdiff.structure.elements import atomic_number
from atomdiff.structure.structure import Structure
from atomdiff.training.config import VoxelTrainConfig
from atomdiff.training.datamodules import StructureDataModule, load_structures, split_structures
from atomdiff.training.run import fit_run, local_module, prepare_run, resumed_model

BOX_TOLERANCE = 1e-4
"""Largest difference (Å) between a structure's cell and the training box that still counts as the same box."""


def common_box(structures: Sequence[Structure], what: str = "training structures") -> np.ndarray:
    """The one cell every structure has (``InputError`` naming the first that differs)."""
    if not structures:
        raise InputError(f"no {what}")
    box = np.asarray(structures[0].cell, dtype=np.float64)
    for k, s in enumerate(structures):
        if not all(s.pbc):
            raise InputError(f"{what}: structure {k} is not periodic along all three lattice vectors")
        if np.abs(np.asarray(s.cell) - box).max() > BOX_TOLERANCE:
            raise InputError(
                f"{what}: all structures must share one box for a voxel model, but structure {k} has cell "
                f"{np.round(s.cell, 4).tolist()} and structure 0 has {np.round(box, 4).tolist()} "
                "(make the data with one box, e.g. `atomdiff data ordered`)"
            )
    return box


def structure_labels(structures: Sequence[Structure], key: str) -> list[str]:
    """The value of ``info[key]`` of every structure, as text (``InputError`` naming the first without it)."""
    labels = []
    for k, s in enumerate(structures):
        if key not in s.info:
            raise InputError(
                f"condition {key!r}: structure {k} has no info entry {key!r} "
                f"(it has {sorted(s.info) or 'none'}); label every structure or train without `condition`"
            )
        labels.append(str(s.info[key]))
    return labels


class VoxelCollate:
    """Encodes a list of structures (all in ``box``) into a ``(B, C, Nx, Ny, Nz)`` float32 batch of fields, or,
    with ``condition`` and ``classes``, a :class:`VoxelBatch` of fields and the index of each structure's
    ``info[condition]`` among ``classes``.

    A class rather than a closure so that data-loader workers can pickle it.
    """

    def __init__(self, grid: VoxelGrid, box: np.ndarray, condition: str = "", classes: Sequence[str] = ()):
        self.grid = grid
        self.box = np.asarray(box, dtype=np.float64)
        self.condition = condition
        self.classes = tuple(classes)

    def __call__(self, items: Sequence[Structure]) -> torch.Tensor | VoxelBatch:
        common_box([*items], "batch")
        if np.abs(np.asarray(items[0].cell) - self.box).max() > BOX_TOLERANCE:
            raise InputError("batch: structures are not in the model's box")
        fields = self.grid.encode_batch(items, torch.float32)
        if not self.condition:
            return fields
        names = structure_labels(items, self.condition)
        unknown = sorted(set(names) - set(self.classes))
        if unknown:
            raise InputError(f"condition {self.condition!r}: labels {unknown} are not among {list(self.classes)}")
        return VoxelBatch(fields, torch.tensor([self.classes.index(n) for n in names], dtype=torch.long))


def parse_grid(text: str) -> tuple[int, int, int] | None:
    """``"48"`` → ``(48, 48, 48)``, ``"48,48,64"`` → ``(48, 48, 64)``, ``""`` → ``None``."""
    if not text.strip():
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"grid: write voxel counts like 48 or 48,48,64, got {text!r}") from None
    values = values * 3 if len(values) == 1 else values
    if len(values) != 3 or min(values) < 1:
        raise InputError(f"grid: write three positive voxel counts like 48,48,64, got {text!r}")
    return values[0], values[1], values[2]


def build_voxel_model(
    config: VoxelTrainConfig, train: Sequence[Structure], box: np.ndarray, classes: Sequence[str] = ()
) -> VoxelDiffusion:
    """A new model for ``config``: channels from ``config.species`` or the elements of ``train``; conditioned on
    ``classes`` when given."""
    if config.species:
        species = tuple(atomic_number(s, what="species") for s in config.species)
    else:
        species = tuple(sorted({int(z) for s in train for z in s.numbers}))
    if not species:
        raise InputError("training structures hold no atoms")
    net = VoxelUNetConfig(
        channels=len(species),
        base=config.base,
        mults=tuple(int(m) for m in config.mults.split(",")),
        blocks=config.blocks,
        time_dim=config.time_dim,
        classes=tuple(classes),
    )
    factor = 2 ** (len(net.mults) - 1)
    shape = parse_grid(config.grid)
    if shape is None:
        grid = VoxelGrid.for_cell(box, species, config.spacing, sigma=config.sigma, multiple_of=factor)
    else:
        grid = VoxelGrid(species, shape, config.sigma)
    return VoxelDiffusion(grid, net, box, VoxelNoise(prediction=config.prediction))


def train_voxel(
    config: VoxelTrainConfig, run_dir: str | os.PathLike, *, resume: bool = False, command: str = ""
) -> Path | None:
    """Train (or, with ``resume``, continue) a voxel diffusion model; returns ``RUN_DIR/model`` on rank zero."""
    run_dir, rank_zero = prepare_run(config, run_dir, resume)
    cache = run_dir / "data_cache"
    structures = load_structures(config.data, cache, config.limit, write_cache=rank_zero)
    if config.val_data:
        train, val = structures, load_structures(config.val_data, cache, config.limit, write_cache=rank_zero)
    else:
        train, val = split_structures(structures, config.val_fraction, config.seed)
    box = common_box([*train, *val])
    classes: tuple[str, ...] = ()
    if config.condition:
        classes = tuple(sorted(set(structure_labels([*train, *val], config.condition))))
    L.seed_everything(config.seed, workers=True, verbose=False)
    if resume:
        model = resumed_model(run_dir)
        if not isinstance(model, VoxelDiffusion):
            raise InputError("the run's checkpoint is not of a voxel diffusion model", path=str(run_dir))
        if model.cell is None or np.abs(model.cell - box).max() > BOX_TOLERANCE:
            raise InputError("the data's box differs from the box of the run being resumed", path=str(run_dir))
        classes = model.classes
    elif config.init:
        from atomdiff.weights import load_voxel_model

        model = load_voxel_model(config.init)
        if model.cell is None or np.abs(model.cell - box).max() > BOX_TOLERANCE:
            raise InputError(f"init: the model {config.init!r} was trained in another box than the data's")
        if classes and model.classes != classes:
            if model.classes:
                raise InputError(f"init: the model's classes {list(model.classes)} differ from {list(classes)}")
            model.net = _with_classes(model.net, classes)
        model.noise = VoxelNoise(
            prediction=config.prediction,
            shift=model.noise.shift,
            scale=model.noise.scale,
            field_range=model.noise.field_range,
            s=model.noise.s,
        )
        model.train()  # loading leaves a model in eval mode
    else:
        model = build_voxel_model(config, train, box, classes)
    if config.condition and not model.classes:
        raise InputError(f"condition {config.condition!r}: the resumed run's model has no classes")
    if config.occupied_weight < 0:
        raise InputError(f"occupied_weight must not be negative, got {config.occupied_weight}")
    model.occupied_weight = float(config.occupied_weight)
    model.label_dropout = float(config.label_dropout)
    model.grid.check_cell(box)
    model.grid.channels_of(np.concatenate([s.numbers for s in [*train, *val]]))  # every element has a channel
    module = local_module(model, config)
    collate = VoxelCollate(model.grid, box, config.condition if model.classes else "", model.classes)
    data = StructureDataModule(train, val, config.batch_size, config.num_workers, config.seed, collate)
    return fit_run(config, run_dir, module, data, len(train), len(val), resume, command)


def _with_classes(net: VoxelUNet, classes: Sequence[str]) -> VoxelUNet:
    """A copy of an unconditional ``net`` with a class embedding for ``classes`` (zero, so that it starts as
    ``net``): fine-tuning an unconditional model into a conditional one."""
    config = VoxelUNetConfig(**{**dataclasses.asdict(net.config), "classes": tuple(classes)})
    new = VoxelUNet(config)
    missing, unexpected = new.load_state_dict(net.state_dict(), strict=False)
    if unexpected or any(not k.startswith("label.") for k in missing):
        raise InputError(f"init: cannot add classes to this network (missing {missing}, unexpected {unexpected})")
    return new.to(next(net.parameters()))
