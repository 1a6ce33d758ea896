"""Shipped model weights, and the one way to load a model (crystal, amorphous, XANES surrogate) by name or folder.

A shipped model is a folder ``atomdiff/weights/<name>/`` holding ``model.safetensors`` and ``config.json``
(as written by :meth:`CrystalDiffusion.save`), installed as package data.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from atomdiff.diffusion.amorphous import AmorphousDiffusion
from atomdiff.diffusion.crystal import CrystalDiffusion
from atomdiff.diffusion.voxel import VoxelDiffusion
from atomdiff.errors import InputError
from atomdiff.models.xanes import XanesSurrogate
from atomdiff.structure.elements import chemical_symbols


@contextlib.contextmanager
def _folder(name_or_path: str | os.PathLike, kind: str) -> Iterator[Path]:
    """The model folder of a path, or of the shipped model of that name and kind."""
    path = Path(name_or_path)
    if path.is_dir():
        yield path
        return
    root = resources.files(__name__)
    name = str(name_or_path)
    if name and name == path.name and name not in (".", ".."):
        candidate = root / name
        if candidate.is_dir():
            with resources.as_file(candidate) as folder:
                yield Path(folder)
            return
    shipped = shipped_models(kind)
    raise InputError(
        f"no model {name!r}: not a folder holding model.safetensors and config.json, nor a shipped {kind} model "
        f"(shipped: {', '.join(shipped) if shipped else 'none installed'})"
    )


def _load(cls, name_or_path: str | os.PathLike, kind: str):
    """Load ``cls`` from a folder, or from the shipped model of that name and kind."""
    with _folder(name_or_path, kind) as folder:
        return cls.load(folder)


def training_record(name_or_path: str | os.PathLike, kind: str = "crystal_diffusion") -> dict | None:
    """The ``training`` entry of a model's ``config.json`` (command, settings, hardware, wall time), if any."""
    with _folder(name_or_path, kind) as folder:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    record = config.get("training") if isinstance(config, dict) else None
    return record if isinstance(record, dict) else None


def load_crystal_model(name_or_path: str | os.PathLike) -> CrystalDiffusion:
    """Load a :class:`CrystalDiffusion` in evaluation mode.

    Args:
        name_or_path: a folder with ``model.safetensors`` and ``config.json``, or the name of a shipped model
            (e.g. ``perov5``, ``carbon24``). An existing folder of that name takes precedence.

    Raises:
        InputError: neither a folder nor a shipped model (the message lists the shipped names), or the
            folder lacks one of the two files.
    """
    return _load(CrystalDiffusion, name_or_path, "crystal_diffusion")


def load_amorphous_model(name_or_path: str | os.PathLike) -> AmorphousDiffusion:
    """Load an :class:`AmorphousDiffusion` prior (folder or shipped name, e.g. ``amorphous_carbon``)."""
    return _load(AmorphousDiffusion, name_or_path, "amorphous_diffusion")


def load_xanes_surrogate(name_or_path: str | os.PathLike) -> XanesSurrogate:
    """Load a :class:`XanesSurrogate` (folder or shipped name, e.g. ``xanes_carbon_k``)."""
    return _load(XanesSurrogate, name_or_path, "xanes_surrogate")


def load_point_cloud_model(name_or_path: str | os.PathLike) -> AmorphousDiffusion | CrystalDiffusion:
    """Load a fixed-atom-count model of either kind its ``config.json`` names: a local
    :class:`AmorphousDiffusion` prior (``atomdiff train amorphous``) or a :class:`CrystalDiffusion`
    (``atomdiff train crystal``, the DiffCSP-style periodic point cloud).

    Raises:
        InputError: no such folder or shipped model, or a model of another kind.
    """
    with _folder(name_or_path, "amorphous_diffusion") as folder:
        try:
            kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        classes = {"crystal_diffusion": CrystalDiffusion, "amorphous_diffusion": AmorphousDiffusion}
        if kind not in classes:
            raise InputError(
                f"not a point-cloud model: config.json names kind {kind!r}, expected one of {sorted(classes)}",
                path=str(folder / "config.json"),
            )
        return classes[kind].load(folder)


DEFAULT_VOXEL_MODEL = "voxel_ordered"
"""Shipped voxel model used when ``atomdiff voxel generate`` gets no ``--model``."""


def load_voxel_model(name_or_path: str | os.PathLike | None = None) -> VoxelDiffusion:
    """Load a :class:`VoxelDiffusion` (folder or shipped name; ``None``: :data:`DEFAULT_VOXEL_MODEL`).

    Raises:
        InputError: no such folder or shipped model; the message lists the shipped voxel models.
    """
    if name_or_path is None:
        shipped = shipped_models("voxel_diffusion")
        if DEFAULT_VOXEL_MODEL not in shipped:
            raise InputError(
                f"no default voxel model ({DEFAULT_VOXEL_MODEL!r}) is installed; shipped voxel models: "
                f"{', '.join(shipped) if shipped else 'none'}. Pass --model FOLDER (e.g. RUN/model of "
                "`atomdiff voxel train`)"
            )
        name_or_path = DEFAULT_VOXEL_MODEL
    return _load(VoxelDiffusion, name_or_path, "voxel_diffusion")


def shipped_models(kind: str | None = "crystal_diffusion") -> list[str]:
    """Names of the shipped models of ``kind`` (``None``: all kinds)."""
    root = resources.files(__name__)
    names = []
    for p in root.iterdir():
        if p.is_dir() and p.joinpath("config.json").is_file():
            if kind is None or json.loads(p.joinpath("config.json").read_text()).get("kind") == kind:
                names.append(p.name)
    return sorted(names)


def choose_crystal_model(elements: set[int], formula_given: bool = False) -> str:
    """The shipped model trained on the fewest elements that include all of ``elements`` (of two such, the
    pattern-conditioned one).

    With an exact formula (structure prediction, species fixed) a model that never saw some element can
    still propose positions, so the model knowing most of them is returned; otherwise an element unknown
    to every shipped model is an error.
    """
    root = resources.files(__name__)
    known, conditioned = {}, {}
    for name in shipped_models():
        config = json.loads(root.joinpath(name, "config.json").read_text())
        known[name] = set(config["stats"]["elements"])
        conditioned[name] = bool(config["net"].get("encoder"))
    covering = [n for n, els in known.items() if elements <= els]
    if covering:
        return min(covering, key=lambda n: (len(known[n]), not conditioned[n], n))
    if formula_given and known:
        return max(known, key=lambda n: (len(elements & known[n]), -len(known[n]), conditioned[n]))
    missing = sorted(elements - set().union(*known.values())) if known else sorted(elements)
    raise InputError(
        f"no shipped model was trained on {', '.join(chemical_symbols[z] for z in missing)}: give --formula "
        "(structure prediction works with any model) or --model"
    )
