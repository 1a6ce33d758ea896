"""Which ordered phase a structure is, atom by atom: the classifier of the voxel ordered-phase experiment.

Every atom gets a species-blind *lattice* label and the structure a *phase*:

- ``fcc``, ``hcp``, ``bcc``: adaptive common-neighbour analysis (a-CNA, Stukowski 2012) from pyscal3;
- ``diamond``: pyscal3's extended CNA for cubic diamond (only atoms labelled "cubic diamond" themselves, not
  their "1NN/2NN" neighbours, which are atoms next to a defect);
- ``sc``: our own test (below), because neither a-CNA nor pyscal3's other identifiers (Ackland–Jones, diamond
  CNA) know simple cubic: the six nearest neighbours are equidistant (spread < ``SC_SPREAD``), the seventh is
  clearly further (> ``SC_GAP`` × their mean; √2 in a perfect crystal) and the six bonds form an octahedron
  (each has one partner within ``SC_ANGLE`` of 180°, the other four within ``SC_ANGLE`` of 90°);
- ``other``: none of these.

A structure's lattice is the majority label. With one species its phase is that lattice. With two, the
sublattice order decides: on sc, bcc and diamond lattices, the phase is rock-salt, CsCl or zinc-blende, and an
atom is ordered when, in the structure made of its species alone, it is labelled fcc, sc or fcc respectively
(the two species alternate over the first shell exactly when each forms that sublattice; testing the
sublattices with the same identifiers is robust to thermal noise, unlike counting species among the k nearest
neighbours when the first two shells of bcc are only 15 % apart). Two species on fcc/hcp, or more than two
species, are not a phase of the experiment. A sample is **perfectly ordered** when every atom carries the
majority lattice label and the chemistry is that of the phase (one species, or both sublattices complete
with equal counts).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pyscal3

from atomdiff.errors import InputError
from atomdiff.physics.descriptors import pairs
from atomdiff.structure.structure import Structure

LATTICES = ("fcc", "hcp", "bcc", "diamond", "sc")
ELEMENTAL = {"fcc": "fcc", "hcp": "hcp", "bcc": "bcc", "diamond": "diamond", "sc": "sc"}
BINARY = {"sc": "rock-salt", "bcc": "CsCl", "diamond": "zinc-blende"}
"""Lattice (species-blind) → binary phase whose two species alternate over the first shell."""
SUBLATTICE = {"sc": "fcc", "bcc": "sc", "diamond": "fcc"}
"""Lattice (species-blind) → the lattice each species forms alone in the binary phase (rock-salt: two fcc,
CsCl: two sc, zinc-blende: two fcc sublattices)."""

PHASES = (*ELEMENTAL.values(), *BINARY.values())

SC_SPREAD = 1.6
SC_GAP = 1.08
SC_ANGLE = 25.0

_NEIGHBOURS = 7
"""Neighbours kept per atom by :func:`_nearest` (the sc test needs the 7th)."""


@dataclasses.dataclass(frozen=True)
class PhaseAssignment:
    """The phase of one structure.

    Attributes:
        phase: one of :data:`PHASES`, or ``None`` (no ordered lattice, or a chemistry no phase has).
        lattice: the majority species-blind lattice (or ``"other"``).
        ordered_fraction: fraction of atoms on the majority lattice with the phase's chemistry.
        perfect: every atom ordered (``ordered_fraction == 1``) and the composition that of the phase.
        counts: atoms per species-blind label.
    """

    phase: str | None
    lattice: str
    ordered_fraction: float
    perfect: bool
    counts: dict[str, int]


def _nearest(structure: Structure, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``(n, k)`` and vectors ``(n, k, 3)`` of every atom's ``k`` nearest neighbours (periodic images
    included); rows with fewer than ``k`` neighbours are padded with ``inf``."""
    n = len(structure)
    scale = (structure.volume / max(n, 1)) ** (1.0 / 3.0)
    cutoff = 1.8 * scale
    while True:
        i, _, vec = pairs(structure, cutoff)
        d = np.linalg.norm(vec, axis=1)
        counts = np.bincount(i, minlength=n)
        if counts.min() >= k or cutoff > 4.0 * scale:
            break
        cutoff *= 1.3
    dist = np.full((n, k), np.inf)
    vecs = np.zeros((n, k, 3))
    order = np.lexsort((d, i))
    i, d, vec = i[order], d[order], vec[order]
    starts = np.searchsorted(i, np.arange(n))
    for a in range(n):
        m = min(counts[a], k)
        sl = slice(starts[a], starts[a] + m)
        dist[a, :m], vecs[a, :m] = d[sl], vec[sl]
    return dist, vecs


def _simple_cubic(dist: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """Per atom: is its first shell a simple-cubic octahedron (see the module's docstring)?"""
    six = dist[:, :6]
    ok = np.isfinite(dist[:, 6]) & np.isfinite(six).all(axis=1)
    ok &= six.max(axis=1) < SC_SPREAD * six.min(axis=1)
    ok &= dist[:, 6] > SC_GAP * six.mean(axis=1)
    unit = vecs[:, :6] / np.where(np.isfinite(six), six, 1.0)[..., None]
    cos = np.einsum("aik,ajk->aij", unit, unit)
    opposite = cos < np.cos(np.radians(180.0 - SC_ANGLE))
    square = np.abs(cos) < np.sin(np.radians(SC_ANGLE))
    off_diagonal = ~np.eye(6, dtype=bool)
    ok &= (opposite.sum(axis=2) == 1).all(axis=1)
    ok &= ((square & off_diagonal).sum(axis=2) == 4).all(axis=1)
    return ok


def lattice_labels(structure: Structure) -> np.ndarray:
    """Species-blind label of every atom: one of :data:`LATTICES` or ``"other"``."""
    n = len(structure)
    labels = np.full(n, "other", dtype=object)
    if n < 2:
        return labels
    if not all(structure.pbc):
        raise InputError("structure: phase identification needs periodicity along all three lattice vectors")
    atoms = structure.to_ase()
    atoms.set_atomic_numbers(np.ones(n, dtype=int))  # species-blind: the lattice only
    pyscal3.common_neighbor_analysis(atoms)
    cna = np.asarray(atoms.arrays["pyscal_structure"])
    for code, name in ((1, "fcc"), (2, "hcp"), (3, "bcc")):
        labels[cna == code] = name
    rest = labels == "other"
    if rest.any():
        pyscal3.diamond_structure(atoms)
        labels[rest & (np.asarray(atoms.arrays["pyscal_structure"]) == 1)] = "diamond"
    rest = labels == "other"
    if rest.any() and n >= _NEIGHBOURS + 1:
        dist, vecs = _nearest(structure, _NEIGHBOURS)
        labels[rest & _simple_cubic(dist, vecs)] = "sc"
    return labels


def classify(structure: Structure) -> PhaseAssignment:
    """The phase of ``structure`` and how much of it is ordered (see the module's docstring)."""
    labels = lattice_labels(structure)
    counts = dict(Counter(labels.tolist()))
    ordered = Counter(label for label in labels.tolist() if label != "other")
    if not ordered:
        return PhaseAssignment(None, "other", 0.0, False, counts)
    lattice = ordered.most_common(1)[0][0]
    on_lattice = labels == lattice
    species, per_species = np.unique(structure.numbers, return_counts=True)
    if len(species) == 1:
        fraction = float(on_lattice.mean())
        return PhaseAssignment(ELEMENTAL[lattice], lattice, fraction, bool(on_lattice.all()), counts)
    if len(species) > 2 or lattice not in BINARY:
        return PhaseAssignment(None, lattice, 0.0, False, counts)
    good = on_lattice.copy()
    for z in species:
        mask = structure.numbers == z
        sub = Structure(structure.numbers[mask], structure.frac[mask], structure.cell, structure.pbc)
        good[mask] &= lattice_labels(sub) == SUBLATTICE[lattice]
    perfect = bool(good.all()) and per_species[0] == per_species[1]
    return PhaseAssignment(BINARY[lattice], lattice, float(good.mean()), perfect, counts)
