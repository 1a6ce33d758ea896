"""Structures for training: reading with a cache, a seeded split, a Dataset, a collate and a DataModule.

Parsing a CSV of CIFs costs ~18 ms per structure, so the parsed structures are cached as a compact ``.npz``
(never pickled) in a folder of the run (``RUN_DIR/data_cache/``), keyed by the data file's absolute path,
size, modification time and ``limit``; a resumed run reads the cache instead of re-parsing. Nothing is ever
written next to the data files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from atomdiff.errors import InputError
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.io import load_structures_npz, read_structures, save_structures_npz
from atomdiff.structure.structure import Structure

CACHE_VERSION = 2


def cache_key(path: str | os.PathLike, limit: int | None) -> str:
    """What identifies a parse of ``path``: absolute path, size, modification time, ``limit``."""
    path = Path(path).resolve()
    st = path.stat()
    return f"v{CACHE_VERSION}|{path}|{st.st_size}|{st.st_mtime_ns}|{limit}"


def _cache_file(path: Path, limit: int | None, cache_dir: Path) -> Path:
    digest = hashlib.sha1(cache_key(path, limit).encode()).hexdigest()[:16]
    return cache_dir / f"{path.stem}-{digest}.npz"


def load_structures(
    paths: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    write_cache: bool = True,
) -> list[Structure]:
    """Every structure of ``paths`` (at most ``limit`` from each), through the cache in ``cache_dir``."""
    out: list[Structure] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InputError("data file not found", path=str(path))
        structures = None
        if cache_dir is not None:
            file = _cache_file(path, limit, Path(cache_dir))
            key = cache_key(path, limit)
            structures = load_structures_npz(file, key) if file.is_file() else None
        if structures is None:
            structures = read_structures(path, limit=limit)
            if not structures:
                raise InputError("data file holds no structures", path=str(path))
            if cache_dir is not None and write_cache:
                save_structures_npz(structures, file, key)
        out.extend(structures)
    return out


def split_structures(
    structures: Sequence[Structure], val_fraction: float, seed: int
) -> tuple[list[Structure], list[Structure]]:
    """A seeded random split into (train, validation); validation gets ``round(val_fraction * n)``."""
    n_val = int(round(val_fraction * len(structures)))
    if n_val == 0:
        return list(structures), []
    if n_val >= len(structures):
        raise InputError(f"val_fraction {val_fraction} leaves no training structures out of {len(structures)}")
    order = np.random.default_rng(seed).permutation(len(structures))
    return [structures[i] for i in order[n_val:]], [structures[i] for i in order[:n_val]]


class StructureDataset(Dataset):
    """A list of :class:`Structure` (or of labelled structures) as a torch Dataset."""

    def __init__(self, structures: Sequence[Any]):
        self.structures = list(structures)

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, index: int) -> Any:
        return self.structures[index]


def collate_structures(items: Sequence[Structure], dtype: torch.dtype = torch.float64) -> StructureBatch:
    """Batch structures (float64 coordinates; the network casts to the dtype of its parameters)."""
    return StructureBatch.from_structures(items, dtype=dtype)


@dataclasses.dataclass
class ConditionedBatch:
    """Structures with their simulated patterns: ``features (B, K, 2, n_q)``, ``radiation (B, K)`` (K variants)."""

    structures: StructureBatch
    features: torch.Tensor
    radiation: torch.Tensor

    def __len__(self) -> int:
        return len(self.structures)


def collate_conditioned(items: Sequence[tuple[Structure, np.ndarray, np.ndarray]]) -> ConditionedBatch:
    """Batch ``(structure, features, radiation)`` items (see :func:`simulate_training_patterns`)."""
    return ConditionedBatch(
        collate_structures([it[0] for it in items]),
        torch.as_tensor(np.stack([it[1] for it in items])),
        torch.as_tensor(np.stack([it[2] for it in items])).long(),
    )


class StructureDataModule(L.LightningDataModule):
    """Training (and optional validation) structures with seeded shuffling.

    ``collate`` turns a list of items into a batch (default: :func:`collate_structures`; it must be picklable
    when ``num_workers > 0``). Under DDP Lightning swaps in a ``DistributedSampler`` seeded from
    ``seed_everything``.
    """

    def __init__(
        self,
        train: Sequence[Any],
        val: Sequence[Any] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        collate: Callable[[Sequence[Any]], Any] = collate_structures,
    ):
        super().__init__()
        if not train:
            raise InputError("no training structures")
        self.train_set = StructureDataset(train)
        self.val_set = StructureDataset(val) if val else None
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.collate = collate

    def _loader(self, dataset: StructureDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []
