"""Training runs of the local equivariant models: amorphous diffusion and XANES surrogates.

Same run-folder layout, checkpoints, EMA and export as crystal diffusion (:mod:`atomdiff.training.run`).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from atomdiff.data.spectra import SpectrumLabelled, read_spectrum_dataset
from atomdiff.diffusion.amorphous import AmorphousDiffusion
from atomdiff.errors import InputError
from atomdiff.models.local import LocalNetConfig
from atomdiff.models.xanes import LabelledBatch, XanesSurrogate
from atomdiff.physics.descriptors import min_distance
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.elements import atomic_number
from atomdiff.structure.io import read_structures
from atomdiff.structure.structure import Structure
from atomdiff.training.config import LocalTrainConfig
from atomdiff.training.datamodules import StructureDataModule, split_structures
from atomdiff.training.run import fit_run, local_module, prepare_run, resumed_model


def collate_float32(items: Sequence[Structure]) -> StructureBatch:
    return StructureBatch.from_structures(items, dtype=torch.float32)


def collate_labelled(items: Sequence[SpectrumLabelled]) -> LabelledBatch:
    """Structures (float32) with the spectra of their absorbing atoms, indices global to the batch."""
    batch = StructureBatch.from_structures([item.structure for item in items], dtype=torch.float32)
    offsets = np.cumsum([0] + [len(item.structure) for item in items[:-1]])
    absorbers = np.concatenate([item.absorbers + off for item, off in zip(items, offsets, strict=True)])
    spectra = np.concatenate([item.spectra for item in items])
    return LabelledBatch(batch, torch.as_tensor(absorbers), torch.as_tensor(spectra, dtype=torch.float32))


def read_amorphous_data(paths: Sequence[str], split: str, limit: int | None) -> list[Structure]:
    """Structures of data-set folders (``ROOT/poscar/<split>``) and of structure files."""
    out: list[Structure] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            folder = path / "poscar" / split
            if not folder.is_dir():
                raise InputError(f"a data folder must hold poscar/{split}/", path=str(path))
            files = sorted(f for f in folder.iterdir() if f.is_file())
            out.extend(s for f in files[:limit] for s in read_structures(f))
        else:
            out.extend(read_structures(path, limit=limit))
    if not out:
        raise InputError("no training structures")
    return out


def _net_config(config: LocalTrainConfig) -> LocalNetConfig:
    return LocalNetConfig(hidden=config.hidden, layers=config.layers, cutoff=config.cutoff, n_rbf=config.n_rbf)


def train_amorphous(
    config: LocalTrainConfig, run_dir: str | os.PathLike, *, resume: bool = False, command: str = ""
) -> Path | None:
    """Train (or continue) an :class:`AmorphousDiffusion` model; returns ``RUN_DIR/model`` on rank zero."""
    run_dir, _ = prepare_run(config, run_dir, resume)
    structures = read_amorphous_data(config.data, config.split, config.limit)
    if config.val_split:
        train, val = structures, read_amorphous_data(config.data, config.val_split, config.limit)
    elif config.val_data:
        train, val = structures, read_amorphous_data(config.val_data, config.split, config.limit)
    else:
        train, val = split_structures(structures, config.val_fraction, config.seed)
    if config.balance_density:
        train = balance_by_density(train)
    L.seed_everything(config.seed, workers=True, verbose=False)
    model = resumed_model(run_dir) if resume else None
    if model is None and config.init:
        from atomdiff.weights import load_amorphous_model

        model = load_amorphous_model(config.init)
        model.train()  # loading leaves a model in eval mode
        unknown = {int(z) for s in train for z in s.numbers} - set(model.elements)
        if unknown:
            raise InputError(f"init: the model {config.init!r} does not know the elements {sorted(unknown)}")
    if model is None:
        densities = [s.density for s in train]
        elements = sorted({int(z) for s in train for z in s.numbers})
        model = AmorphousDiffusion(
            _net_config(config),
            sigma_max=config.sigma_max,
            elements=elements,
            densities=(min(densities), max(densities)),
        )
    data = StructureDataModule(train, val, config.batch_size, config.num_workers, config.seed, collate_float32)
    module = local_module(model, config, noise_weighting=config.noise_weighting)
    return fit_run(config, run_dir, module, data, len(train), len(val), resume, command)


def balance_by_density(structures: Sequence[Structure], bin_width: float = 0.05) -> list[Structure]:
    """``structures`` with those of each density bin repeated ``round(largest bin / its bin)`` times (in order),
    so that a shuffled epoch draws every density about equally often."""
    keys = [int(round(s.density / bin_width)) for s in structures]
    counts = Counter(keys)
    largest = max(counts.values())
    return [s for s, k in zip(structures, keys, strict=True) for _ in range(max(1, round(largest / counts[k])))]


FLOOR_FRACTION = 0.75
"""A surrogate's distance floor as a fraction of the shortest pair distance of its training structures."""


def surrogate_distance_floor(items: Sequence[SpectrumLabelled]) -> float:
    """The :attr:`~atomdiff.models.local.LocalNetConfig.distance_floor` of a surrogate trained on ``items``:
    :data:`FLOOR_FRACTION` of their shortest pair distance (Å), so that structures as close-packed as the data
    are evaluated unchanged and a guided sample's denoised estimate, with far closer pairs, does not overflow."""
    return round(FLOOR_FRACTION * min(min_distance(item.structure) for item in items), 3)


def train_xanes(
    config: LocalTrainConfig, run_dir: str | os.PathLike, *, resume: bool = False, command: str = ""
) -> Path | None:
    """Train (or continue) a :class:`XanesSurrogate` on labelled data-set folders."""
    run_dir, _ = prepare_run(config, run_dir, resume)
    absorber = atomic_number(config.absorber)
    items = [item for root in config.data for item in read_spectrum_dataset(root, config.split, absorber)]
    items = items if config.limit is None else items[: config.limit]
    if config.val_split:
        val = [item for root in config.data for item in read_spectrum_dataset(root, config.val_split, absorber)]
        train = items
    elif config.val_data:
        val = [item for root in config.val_data for item in read_spectrum_dataset(root, config.split, absorber)]
        train = items
    else:
        train, val = split_structures(items, config.val_fraction, config.seed)
    widths = {item.spectra.shape[1] for item in train + val}
    if len(widths) != 1:
        raise InputError(f"spectra of different lengths: {sorted(widths)}")
    L.seed_everything(config.seed, workers=True, verbose=False)
    model = resumed_model(run_dir) if resume else None
    if model is None:
        spectra = np.concatenate([item.spectra for item in train])
        std = np.maximum(spectra.std(0), 1e-3 * max(float(spectra.std(0).max()), 1e-12))
        net = dataclasses.replace(_net_config(config), distance_floor=surrogate_distance_floor(train))
        mean = spectra.mean(0).tolist()
        model = XanesSurrogate(net, spectra.shape[1], absorber, mean, std.tolist(), edge=config.edge)
    data = StructureDataModule(train, val, config.batch_size, config.num_workers, config.seed, collate_labelled)
    return fit_run(config, run_dir, local_module(model, config), data, len(train), len(val), resume, command)
