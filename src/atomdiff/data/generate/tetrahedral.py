"""Cation orderings on the sphalerite and wurtzite frameworks: the structures of tetrahedral chalcogenides.

Kesterite, stannite and PMCA Cu2ZnSnS4, chalcopyrite CuInSe2, the CuAu-like orderings, the wurtzite-derived
wurtz-kesterite and wurtz-stannite, and the binaries ZnS, CdTe (sphalerite and wurtzite) are all one anion sublattice
with the cations distributed over the tetrahedral sites of a parent cell. This module enumerates those
distributions: for each parent supercell (a short list of the cells the known orderings live in) and each
composition whose cations fill its sites, every assignment of cations to sites is generated and assignments
related by a symmetry operation of the parent (a site permutation) are kept once — the lexicographically smallest
labelling of each orbit. It is a much cheaper source of physically sensible starting points than random crystals
for these systems: a structure needs only a relaxation, not a search.

Hand-written because the maintained enumerator (enumlib, behind pymatgen's EnumerateStructureTransformation) is a
Fortran program that is not on PyPI; the parents here are small enough for brute force under their symmetry.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from atomdiff.diffusion.constraints import parse_formula
from atomdiff.errors import InputError
from atomdiff.structure.orderings import multiset_permutations
from atomdiff.structure.orderings import site_permutations as structure_site_permutations
from atomdiff.structure.structure import Structure


@dataclasses.dataclass(frozen=True)
class Parent:
    """A parent framework cell for a bond length of 1 Å: cation and anion sites in fractional coordinates."""

    name: str
    cell: np.ndarray
    cations: np.ndarray
    anions: np.ndarray

    def scaled(self, bond: float) -> np.ndarray:
        return self.cell * bond


def _sphalerite(reps: tuple[int, int, int]) -> Parent:
    a = 4 / math.sqrt(3)  # cubic cell for a cation–anion bond of 1 Å
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    shifts = np.array(list(itertools.product(*(range(r) for r in reps))), dtype=float)
    reps_arr = np.array(reps, dtype=float)
    cations = ((fcc[None] + shifts[:, None]) / reps_arr).reshape(-1, 3)
    anions = ((fcc[None] + 0.25 + shifts[:, None]) / reps_arr).reshape(-1, 3)
    return Parent(f"sphalerite {'x'.join(map(str, reps))}", np.diag(a * reps_arr), cations, anions % 1)


def _wurtzite(reps: tuple[int, int, int], orthohexagonal: bool) -> Parent:
    a = math.sqrt(8 / 3)  # ideal wurtzite for a bond of 1 Å: c/a = sqrt(8/3), u = 3/8
    c = a * math.sqrt(8 / 3)
    u = 3 / 8
    if orthohexagonal:  # a, sqrt(3) a, c with two hexagonal cells
        cell = np.diag([a, math.sqrt(3) * a, c])
        base_c = np.array([[0, 0, 0], [0.5, 0.5, 0], [0, 1 / 3, 0.5], [0.5, 5 / 6, 0.5]])
    else:
        cell = np.array([[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c]])
        base_c = np.array([[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5]])
    base_a = base_c + np.array([0, 0, u])
    shifts = np.array(list(itertools.product(*(range(r) for r in reps))), dtype=float)
    reps_arr = np.array(reps, dtype=float)
    cations = ((base_c[None] + shifts[:, None]) / reps_arr).reshape(-1, 3)
    anions = ((base_a[None] + shifts[:, None]) / reps_arr).reshape(-1, 3) % 1
    kind = "orthohexagonal" if orthohexagonal else "hexagonal"
    return Parent(f"wurtzite {kind} {'x'.join(map(str, reps))}", cell * reps_arr[:, None], cations, anions)


#: parent cells, smallest first: the cells in which the known orderings of the tetrahedral chalcogenides live
PARENTS: tuple[Parent, ...] = (
    _sphalerite((1, 1, 1)),  # 4 cation sites: ZnS, CuAu-like ABX2
    _wurtzite((1, 1, 1), False),  # 2 sites: wurtzite ZnS, CdTe
    _wurtzite((1, 1, 1), True),  # 4 sites: β-NaFeO2-like ABX2 orderings
    _sphalerite((1, 1, 2)),  # 8 sites: kesterite, stannite, PMCA, chalcopyrite
    _wurtzite((2, 1, 1), True),  # 8 sites: wurtz-kesterite, wurtz-stannite
    _wurtzite((1, 1, 2), True),  # 8 sites
)


def split_composition(formula: str) -> tuple[dict[int, int], dict[int, int]]:
    """Cations and anions (group 16 and 17 elements) of a formula unit; refuses what is not tetrahedral (1:1)."""
    comp = parse_formula(formula)
    anions = {z: n for z, n in comp.items() if z in (8, 16, 34, 52, 9, 17, 35, 53)}
    cations = {z: n for z, n in comp.items() if z not in anions}
    if not anions or not cations or sum(cations.values()) != sum(anions.values()):
        raise InputError(f"{formula}: not a tetrahedral (one cation per anion) chalcogenide or halide")
    if len(anions) != 1:
        raise InputError(f"{formula}: mixed anions are not enumerated (one anion element per compound)")
    return cations, anions


def site_permutations(parent: Parent, symprec: float = 1e-3) -> np.ndarray:
    """``(n_ops, n_cation_sites)``: where each symmetry operation of the (undecorated) parent sends each cation
    site (:func:`atomdiff.structure.orderings.site_permutations` on the parent with one cation and one anion
    species; cations map onto cations)."""
    n = len(parent.cations)
    undecorated = Structure([1] * n + [2] * len(parent.anions), np.vstack([parent.cations, parent.anions]), parent.cell)
    perms = structure_site_permutations(undecorated, symprec)
    if not np.all(np.sort(perms[:, :n], axis=1) == np.arange(n)):
        raise RuntimeError(f"symmetry operation does not map the cation sites of {parent.name}")
    return np.unique(perms[:, :n], axis=0)


def distinct_orderings(parent: Parent, cations: dict[int, int]) -> list[tuple[int, ...]]:
    """Symmetry-distinct assignments of the cation multiset (repeated to fill the parent) to its sites."""
    n_sites = len(parent.cations)
    per_unit = sum(cations.values())
    if n_sites % per_unit:
        return []
    reps = n_sites // per_unit
    items = [z for z, n in sorted(cations.items()) for _ in range(n * reps)]
    perms = site_permutations(parent)
    inverse = np.argsort(perms, axis=1)  # labelling after the operation: new[perm[i]] = old[i]
    seen: set[tuple[int, ...]] = set()
    out = []
    for labels in multiset_permutations(items):
        arr = np.asarray(labels)
        canonical = min(tuple(arr[inv].tolist()) for inv in inverse)
        if canonical not in seen:
            seen.add(canonical)
            out.append(canonical)
    return out


def bond_length(cations: dict[int, int], anion: int) -> float:
    """Mean cation–anion distance from covalent radii (ASE's table, Cordero et al. 2008), a starting guess that
    the relaxation corrects."""
    from ase.data import covalent_radii

    total = sum(cations.values())
    return sum(n * (covalent_radii[z] + covalent_radii[anion]) for z, n in cations.items()) / total


def tetrahedral_structures(
    formula: str, max_atoms: int = 20, parents: Sequence[Parent] = PARENTS
) -> list[tuple[str, Structure]]:
    """Every symmetry-distinct cation ordering of ``formula`` on the ``parents`` that fit in ``max_atoms``, as
    ``(parent name, primitive cell)`` with an ideal framework scaled to the covalent bond length. Orderings that are
    the same crystal (in a bigger cell, or related by a symmetry that the supercell lacks) are removed with
    pymatgen's StructureMatcher."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    cations, anions = split_composition(formula)
    (anion,) = anions
    bond = bond_length(cations, anion)
    matcher = StructureMatcher(ltol=0.05, stol=0.05, angle_tol=1, primitive_cell=True, scale=False)
    out: list[tuple[str, Structure]] = []
    kept: list = []
    for parent in parents:
        if 2 * len(parent.cations) > max_atoms:
            continue
        for labels in distinct_orderings(parent, cations):
            numbers = list(labels) + [anion] * len(parent.anions)
            s = Structure(numbers, np.vstack([parent.cations, parent.anions]), parent.scaled(bond))
            pm = s.to_pymatgen()
            if any(matcher.fit(pm, k) for k in kept):
                continue
            kept.append(pm)
            # the primitive cell: a sampler given a formula draws one formula unit per cell by default, so the
            # 8-atom body-centred cell of kesterite must be in the data, not only its 16-atom conventional cell
            primitive = SpacegroupAnalyzer(pm, symprec=1e-3).get_primitive_standard_structure()
            out.append((parent.name, Structure.from_pymatgen(primitive)))
    return out
