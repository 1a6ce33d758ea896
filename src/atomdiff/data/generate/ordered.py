"""Ordered elemental and binary crystals in one fixed cubic box: the training set of the voxel experiment.

Every structure fills the same cubic box of side :data:`BOX` = 12 Å, so a voxel model sees one grid and the
number of atoms is the only thing that changes between phases and densities. Lattice constants are therefore
``a = BOX / k`` for integer ``k`` (a supercell of ``k³`` conventional cells fills the box exactly), chosen near
real compounds:

=============  ======================================  =============================================
phase          a (Å) = 12/k                            near
=============  ======================================  =============================================
sc             3.00 (k=4), 2.40 (k=5, compressed)      α-Po 3.35 (the only sc element)
bcc            3.00 (k=4), 4.00 (k=3)                  W 3.17, Fe 2.87; Na 4.29
fcc            4.00 (k=3), 6.00 (k=2)                  Al 4.05, Au 4.08; Sr 6.08
diamond        4.00 (k=3), 6.00 (k=2)                  C 3.57; α-Sn 6.49, Ge 5.66
rock-salt      4.00 (k=3), 6.00 (k=2)                  LiF 4.03, MgO 4.21; KCl 6.29
CsCl           3.00 (k=4), 4.00 (k=3)                  β-CuZn 2.95; CsCl 4.12
zinc-blende    4.00 (k=3), 6.00 (k=2)                  SiC 4.36, BN 3.62; InAs 6.06
hcp            a ≈ 2.35, c = 4.00 (strained, below)    Be a 2.29, c 3.58
=============  ======================================  =============================================

Why 12 Å rather than ~9 Å: hcp needs its orthorhombic cell ``(a, a√3, c)`` to tile a cube, i.e. integers
``n1 a = n2 a√3`` — the smallest good fit is ``5 : 3`` (3.9 % mismatch; ``3 : 2`` in a 9 Å box is 15 %), so
``a ≈ BOX/5`` is a metal-like 2.4 Å only for a box of about 12 Å; a 12 Å box also gives every cubic phase two
lattice constants within ~12 % of a real compound, and allows the rotated orientation below (box = 3a at
a = 4 Å). The price is a 48³ grid at 0.25 Å and up to 256 atoms per box.

Orientations. A cubic crystal in a cubic box is commensurate under 90° rotations and axis permutations only
for the trivial orientation — and those map a cubic crystal onto itself, so they add nothing. One genuinely
different orientation fits when the box is three conventional cells wide: the rational rotation
``Q = M / 3`` with ``M = [[2, 2, -1], [-1, 2, 2], [2, -1, 2]]`` (orthogonal, det +1: 60° about [111], the Σ3
twin orientation) maps the box edges onto lattice vectors of length ``3a``; it is used for every cubic phase at
``a = 4 Å``. hcp uses the orthorhombic supercell ``5 × 3 × 3`` strained onto the cube (a 2.40 Å along the
a axis, 2.31 Å across it, c = 4.00 Å: c/a ≈ 1.70 against the ideal 1.633), with its c axis along x, y or z
(three orientations).

Every structure is then shifted by a uniformly random translation (the crystal's origin is arbitrary; this
teaches a voxel model that an atom may sit anywhere between grid points) and each atom is displaced by
Gaussian thermal noise of standard deviation ``σ`` per Cartesian component, ``σ`` cycling through
:data:`THERMAL_SIGMAS` (0.02, 0.05, 0.08 Å: below and around room-temperature vibration amplitudes, small enough
that every structure is still classified as its phase).

Elemental phases are made of ``species[0]``, binaries of ``species[0]`` (on the origin sublattice) and
``species[1]``; the element names are labels of the voxel channels only, the geometry is what is learned.
Each structure carries ``info``: ``phase``, ``lattice_constant``, ``orientation``, ``sigma_thermal``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.build import bulk, make_supercell

from atomdiff.errors import InputError
from atomdiff.files import atomic_path

BOX = 12.0
"""Side of the cubic box every structure fills, Å."""

THERMAL_SIGMAS = (0.02, 0.05, 0.08)
"""Standard deviations of the Gaussian displacement of each Cartesian coordinate, Å."""

TWIN_ROTATION = np.array([[2, 2, -1], [-1, 2, 2], [2, -1, 2]])
"""Box edges, in conventional cells, of the rotated orientation (3 × an orthogonal matrix with det +1)."""

HCP_REPEATS = (5, 3, 3)
"""Orthorhombic hcp cells ``(a, a√3, c)`` along the c-normal, in-plane-normal and c directions of the box."""

_ASE_NAMES = {
    "sc": "sc",
    "bcc": "bcc",
    "fcc": "fcc",
    "diamond": "diamond",
    "rock-salt": "rocksalt",
    "CsCl": "cesiumchloride",
    "zinc-blende": "zincblende",
}
CUBIC_DIVISIONS: dict[str, tuple[int, ...]] = {
    "sc": (4, 5),
    "bcc": (4, 3),
    "fcc": (3, 2),
    "diamond": (3, 2),
    "rock-salt": (3, 2),
    "CsCl": (4, 3),
    "zinc-blende": (3, 2),
}
"""Conventional cells ``k`` along each box edge, per cubic phase (``a = BOX / k``)."""

BINARY = ("rock-salt", "CsCl", "zinc-blende")
PHASES = (*CUBIC_DIVISIONS, "hcp")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One lattice constant and orientation of a phase (before translation and thermal noise)."""

    phase: str
    lattice_constant: float
    orientation: str


def variants(phase: str) -> list[Variant]:
    """The lattice constants and orientations of ``phase`` that fit the box (see the module's table)."""
    if phase == "hcp":
        a = BOX / HCP_REPEATS[0]
        return [Variant("hcp", a, f"c||{axis}") for axis in "zxy"]
    if phase not in CUBIC_DIVISIONS:
        raise InputError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")
    out = []
    for k in CUBIC_DIVISIONS[phase]:
        out.append(Variant(phase, BOX / k, "cube"))
        if k % 3 == 0:
            out.append(Variant(phase, BOX / k, "twin-111"))
    return out


def _cubic(variant: Variant, species: Sequence[str]) -> Atoms:
    name = _ASE_NAMES[variant.phase]
    symbols = "".join(species[:2]) if variant.phase in BINARY else species[0]
    unit = bulk(symbols, name, a=variant.lattice_constant, cubic=True)
    k = int(round(BOX / variant.lattice_constant))
    matrix = TWIN_ROTATION * (k // 3) if variant.orientation == "twin-111" else np.eye(3, dtype=int) * k
    return make_supercell(unit, matrix)


def _hcp(variant: Variant, species: Sequence[str]) -> Atoms:
    n = np.array(HCP_REPEATS)
    unit = bulk(species[0], "hcp", a=BOX / n[0], c=BOX / n[2], orthorhombic=True)
    unit.set_cell(np.diag(BOX / n), scale_atoms=True)  # strain a√3 onto BOX / n[1]
    atoms = make_supercell(unit, np.diag(n))
    axis = variant.orientation[-1]
    order = {"z": [0, 1, 2], "x": [1, 2, 0], "y": [2, 0, 1]}[axis]  # which crystal axis lies along x, y, z
    frac = atoms.get_scaled_positions()[:, order]
    return Atoms(atoms.numbers, scaled_positions=frac, cell=np.eye(3) * BOX, pbc=True)


def ideal_structure(variant: Variant, species: Sequence[str] = ("Cu", "Zn")) -> Atoms:
    """The perfect crystal of ``variant`` filling the cubic box, atoms wrapped into it."""
    atoms = _hcp(variant, species) if variant.phase == "hcp" else _cubic(variant, species)
    frac = np.linalg.solve(atoms.cell.array.T, atoms.positions.T).T  # fractional in the (rotated) supercell
    frac = np.where(np.abs(frac - np.round(frac)) < 1e-9, np.round(frac), frac) % 1.0
    return Atoms(atoms.numbers, scaled_positions=frac, cell=np.eye(3) * BOX, pbc=True)


def ordered_structures(
    per_phase: int,
    seed: int = 0,
    phases: Sequence[str] = PHASES,
    species: Sequence[str] = ("Cu", "Zn"),
    sigmas: Sequence[float] = THERMAL_SIGMAS,
) -> list[Atoms]:
    """``per_phase`` noisy structures of each phase, cycling through its variants and the thermal ``sigmas``.

    Structure ``j`` of a phase uses variant ``j mod V``, sigma ``(j // V) mod S`` and random numbers seeded by
    ``(seed, phase, j)`` — so it does not depend on ``per_phase`` or on the other phases.
    """
    if per_phase < 1:
        raise InputError(f"per_phase must be at least 1, got {per_phase}")
    if len(species) < 2 or species[0] == species[1]:
        raise InputError(f"species: give two different elements, got {list(species)}")
    if not sigmas or min(sigmas) < 0:
        raise InputError(f"sigmas must be non-negative widths, got {list(sigmas)}")
    out = []
    for p, phase in enumerate(phases):
        options = variants(phase)
        ideals = [ideal_structure(v, species) for v in options]
        for j in range(per_phase):
            v = j % len(options)
            sigma = float(sigmas[(j // len(options)) % len(sigmas)])
            rng = np.random.default_rng([seed, PHASES.index(phase) if phase in PHASES else p, j])
            atoms = ideals[v].copy()
            shift = rng.random(3) * BOX
            atoms.positions = atoms.positions + shift + rng.normal(0.0, sigma, atoms.positions.shape)
            atoms.wrap()
            atoms.info.update(
                phase=phase,
                lattice_constant=round(options[v].lattice_constant, 6),
                orientation=options[v].orientation,
                sigma_thermal=sigma,
            )
            out.append(atoms)
    return out


def write_ordered_dataset(path: str | os.PathLike, per_phase: int, seed: int = 0, **options) -> list[Atoms]:
    """Write :func:`ordered_structures` to an extxyz file (complete or not at all); returns them."""
    from ase.io import write

    structures = ordered_structures(per_phase, seed, **options)
    with atomic_path(path) as tmp:
        write(tmp, structures, format="extxyz")
    return structures
