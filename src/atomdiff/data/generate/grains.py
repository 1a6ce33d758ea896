"""Bulk crystals of the two grains of one grain boundary: the training set of a boundary-specific voxel model.

A convolutional voxel model is equivariant to translations but not to rotations, so a model that has only seen
a crystal in one orientation cannot continue a grain that is rotated with respect to the grid. ``atomdiff gb``
keeps the grains and regenerates the boundary slabs between them, so the model must know the crystal in the
orientations of the two grains, in the boundary's own cell. This module makes that data: for each grain of the
builder's bicrystal (:func:`atomdiff.structure.grain_boundary.build_bicrystal`, at the lattice constant the
model is trained at), the perfect crystal of that grain filling the whole bicrystal cell
(:func:`~atomdiff.structure.grain_boundary.grain_crystal`), shifted by a random translation and displaced by
Gaussian thermal noise (σ cycling through :data:`atomdiff.data.generate.ordered.THERMAL_SIGMAS`). No boundary
is in the data: the model learns the two bulk orientations, and the boundary structure is what inpainting has to
invent. Each structure carries ``info``: ``grain`` (0 or 1) and ``sigma_thermal``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from ase import Atoms

from atomdiff.data.generate.ordered import THERMAL_SIGMAS
from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.structure.grain_boundary import Bicrystal, grain_crystal


def grain_structures(
    bicrystal: Bicrystal, number: int, seed: int = 0, sigmas: Sequence[float] = THERMAL_SIGMAS
) -> list[Atoms]:
    """``number`` noisy bulk crystals of the two grains of ``bicrystal`` (in its cell), alternating.

    Structure ``j`` is grain ``j mod 2`` with thermal σ ``sigmas[(j // 2) mod len(sigmas)]`` and random numbers
    seeded by ``(seed, j)``, so it does not depend on ``number``.
    """
    if number < 1:
        raise InputError(f"number of structures must be at least 1, got {number}")
    if not sigmas or min(sigmas) < 0:
        raise InputError(f"sigmas must be non-negative widths, got {list(sigmas)}")
    grains = [grain_crystal(bicrystal, half).to_ase() for half in (0, 1)]
    out = []
    for j in range(number):
        rng = np.random.default_rng([seed, j])
        atoms = grains[j % 2].copy()
        thermal = float(sigmas[(j // 2) % len(sigmas)])
        shift = rng.random(3) @ atoms.cell.array
        atoms.positions = atoms.positions + shift + rng.normal(0.0, thermal, atoms.positions.shape)
        atoms.wrap()
        atoms.info.update(grain=j % 2, sigma_thermal=thermal)
        out.append(atoms)
    return out


def write_grain_dataset(path: str | os.PathLike, bicrystal: Bicrystal, number: int, **options) -> list[Atoms]:
    """Write :func:`grain_structures` to an extxyz file (complete or not at all); returns them."""
    from ase.io import write

    structures = grain_structures(bicrystal, number, **options)
    with atomic_path(path) as tmp:
        write(tmp, structures, format="extxyz")
    return structures
