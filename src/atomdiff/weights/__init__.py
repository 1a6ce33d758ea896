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
from atomdiff.structure.elements import chemical_symbols


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
    shipped = shipped_models()
    raise InputError(
        f"no model {name!r}: not a folder holding model.safetensors and config.json, nor a shipped model "
        f"(shipped: {', '.join(shipped) if shipped else 'none installed'})"
    )


def shipped_models() -> list[str]:
    root = resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.joinpath("config.json").is_file())


def choose_crystal_model(elements: set[int], formula_given: bool = False) -> str:
    """The shipped model trained on the fewest elements that include all of ``elements``.

    With an exact formula (structure prediction, species fixed) a model that never saw some element can
    still propose positions, so the model knowing most of them is returned; otherwise an element unknown
    to every shipped model is an error.
    """
    import json

    root = resources.files(__name__)
    known = {}
    for name in shipped_models():
        known[name] = set(json.loads(root.joinpath(name, "config.json").read_text())["stats"]["elements"])
    covering = [n for n, els in known.items() if elements <= els]
    if covering:
        return min(covering, key=lambda n: len(known[n]))
    if formula_given and known:
        return max(known, key=lambda n: (len(elements & known[n]), -len(known[n])))
    missing = sorted(elements - set().union(*known.values())) if known else sorted(elements)
    raise InputError(
        f"no shipped model was trained on {', '.join(chemical_symbols[z] for z in missing)}: give --formula "
        "(structure prediction works with any model) or --model"
    )
