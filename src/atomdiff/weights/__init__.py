"""Shipped model weights, and the one way to load a crystal model by name or folder.

A shipped model is a folder ``atomdiff/weights/<name>/`` holding ``model.safetensors`` and ``config.json``
(as written by :meth:`CrystalDiffusion.save`), installed as package data.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from atomdiff.diffusion.crystal import CrystalDiffusion
from atomdiff.errors import InputError


def load_crystal_model(name_or_path: str | os.PathLike) -> CrystalDiffusion:
    """Load a :class:`CrystalDiffusion` in evaluation mode.

    Args:
        name_or_path: a folder with ``model.safetensors`` and ``config.json``, or the name of a shipped model
            (e.g. ``perov5``, ``carbon24``). An existing folder of that name takes precedence.

    Raises:
        InputError: neither a folder nor a shipped model (the message lists the shipped names), or the
            folder lacks one of the two files.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return CrystalDiffusion.load(path)
    root = resources.files(__name__)
    name = str(name_or_path)
    if name and name == path.name and name not in (".", ".."):
        candidate = root / name
        if candidate.is_dir():
            with resources.as_file(candidate) as folder:
                return CrystalDiffusion.load(folder)
    shipped = sorted(p.name for p in root.iterdir() if p.is_dir() and p.joinpath("config.json").is_file())
    raise InputError(
        f"no model {name!r}: not a folder holding model.safetensors and config.json, nor a shipped model "
        f"(shipped: {', '.join(shipped) if shipped else 'none installed'})"
    )
