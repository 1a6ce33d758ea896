"""Training of diffusion models with Lightning (the only package that imports Lightning).

- :mod:`~atomdiff.training.config`: :class:`TrainConfig`, every knob of a run (no Lightning import);
- :mod:`~atomdiff.training.datamodules`: cached reading of structure files, Dataset, collate, DataModule;
- :mod:`~atomdiff.training.lightning`: :class:`CrystalDiffusionModule` (AdamW, warm-up schedule, EMA);
- :mod:`~atomdiff.training.export`: ``export(run_dir_or_ckpt, out_dir)``, EMA weights → safetensors + JSON;
- :mod:`~atomdiff.training.run`: :func:`train_crystal`, a whole run in a run directory.

Names are imported lazily, so ``import atomdiff.training.config`` (the command line does) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "TrainConfig": "config",
    "StructureDataModule": "datamodules",
    "StructureDataset": "datamodules",
    "collate_structures": "datamodules",
    "load_structures": "datamodules",
    "EMA": "lightning",
    "CrystalDiffusionModule": "lightning",
    "train_crystal": "run",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"atomdiff.training.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'atomdiff.training' has no attribute {name!r}")
