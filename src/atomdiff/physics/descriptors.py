"""Scalar and 1-D descriptors of a single periodic structure (numpy outputs).

Neighbours are found with :func:`atomdiff.structure.neighbors.neighbor_list` (periodic images included, an
atom with its own images too). Distances are in Å, angles in degrees, densities in g/cm³.

Default bond cutoffs (:func:`bond_cutoff`): 1.85 Å for C–C (the usual cutoff for amorphous and crystalline
carbon, between the 1.54 Å sp3 bond and the 2.5 Å second shell), 2.85 Å for Si–Si (the first minimum of the
g(r) of amorphous silicon, the cutoff of its coordination statistics, e.g. Deringer et al. 2018; between the
2.35 Å bond and the 3.84 Å second shell), otherwise 1.2 × the sum of the covalent radii of ASE's table
(Cordero et al. 2008).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from ase.data import covalent_radii

from atomdiff.errors import InputError
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.elements import atomic_number, chemical_symbols
from atomdiff.structure.neighbors import neighbor_list
from atomdiff.structure.structure import Structure

CARBON_CUTOFF = 1.85
SILICON_CUTOFF = 2.85
COVALENT_FACTOR = 1.2
_CARBON = 6
_ELEMENT_BONDS = {_CARBON: CARBON_CUTOFF, 14: SILICON_CUTOFF}

Cutoff = float | Mapping[tuple[str, str], float] | None


def pairs(structure: Structure, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, vectors)``: directed pairs closer than ``cutoff`` (Å), shapes ``(n,)`` and ``(n, 3)``."""
    if len(structure) == 0 or cutoff <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 3))
    batch = StructureBatch.from_structures([structure], dtype=torch.float64)
    nb = neighbor_list(batch, float(cutoff))
    with torch.no_grad():
        vectors = nb.vectors(batch).cpu().numpy()
    keep = np.linalg.norm(vectors, axis=1) < cutoff
    return nb.i.cpu().numpy()[keep], nb.j.cpu().numpy()[keep], vectors[keep]


def bond_cutoff(z_a: int, z_b: int) -> float:
    """Default bond length cutoff (Å) between elements ``z_a`` and ``z_b`` (see the module docstring)."""
    if z_a == z_b and z_a in _ELEMENT_BONDS:
        return _ELEMENT_BONDS[z_a]
    return COVALENT_FACTOR * float(covalent_radii[z_a] + covalent_radii[z_b])


def _cutoff_matrix(numbers: np.ndarray, cutoff: Cutoff) -> tuple[np.ndarray, np.ndarray]:
    """``(zs, table)``: the elements present and the ``(k, k)`` cutoff between each pair of them."""
    zs = np.unique(numbers)
    if isinstance(cutoff, int | float):
        if cutoff <= 0:
            raise InputError(f"cutoff must be positive, got {cutoff}")
        return zs, np.full((len(zs), len(zs)), float(cutoff))
    table = np.array([[bond_cutoff(int(a), int(b)) for b in zs] for a in zs]).reshape(len(zs), len(zs))
    if cutoff is not None:
        index = {int(z): k for k, z in enumerate(zs)}
        for (sa, sb), value in cutoff.items():
            za, zb = atomic_number(sa), atomic_number(sb)
            if za in index and zb in index:
                if value <= 0:
                    raise InputError(f"cutoff for {sa}-{sb} must be positive, got {value}")
                table[index[za], index[zb]] = table[index[zb], index[za]] = float(value)
    return zs, table


def coordination_numbers(structure: Structure, cutoff: Cutoff = None) -> np.ndarray:
    """Number of neighbours of each atom, shape ``(n_atoms,)`` (int).

    Args:
        cutoff: one distance (Å) for all pairs; or a mapping ``(symbol, symbol) → Å`` (symmetric; pairs not
            listed use the default); or None for the defaults of :func:`bond_cutoff`.
    """
    numbers = structure.numbers
    if len(numbers) == 0:
        return np.zeros(0, dtype=np.int64)
    zs, table = _cutoff_matrix(numbers, cutoff)
    i, j, vec = pairs(structure, float(table.max()))
    species = np.searchsorted(zs, numbers)
    bonded = np.linalg.norm(vec, axis=1) < table[species[i], species[j]]
    return np.bincount(i[bonded], minlength=len(numbers)).astype(np.int64)


def hybridisation_fractions(structure: Structure, cutoff: float = CARBON_CUTOFF) -> dict[str, float]:
    """Fractions of carbon atoms with 2 (``sp``), 3 (``sp2``), 4 (``sp3``) or another number (``other``) of
    neighbours (of any element) within ``cutoff`` Å. :class:`InputError` if there is no carbon."""
    carbon = structure.numbers == _CARBON
    if not carbon.any():
        raise InputError("hybridisation fractions need carbon atoms; the structure has none")
    cn = coordination_numbers(structure, float(cutoff))[carbon]
    n = float(carbon.sum())
    fractions = {name: float(np.sum(cn == k)) / n for name, k in (("sp", 2), ("sp2", 3), ("sp3", 4))}
    fractions["other"] = 1.0 - sum(fractions.values())
    return fractions


def coordination_fractions(structure: Structure, element: int, cutoff: Cutoff = None) -> dict[int, float]:
    """Fraction of the atoms of ``element`` (atomic number) with each number of neighbours (of any element),
    ``{coordination: fraction}`` over the numbers that occur; bonds as in :func:`coordination_numbers`."""
    mine = structure.numbers == element
    if not mine.any():
        raise InputError(f"the structure has no atom of {chemical_symbols[element]}")
    cn = coordination_numbers(structure, cutoff)[mine]
    values, counts = np.unique(cn, return_counts=True)
    return {int(v): float(c) / float(mine.sum()) for v, c in zip(values, counts, strict=True)}


def fraction_names(element: int) -> tuple[str, ...]:
    """Names of :func:`network_fractions` for cells of ``element``: carbon's sp, sp2, sp3, else cn3, cn4, cn5."""
    return ("sp", "sp2", "sp3") if element == _CARBON else ("cn3", "cn4", "cn5")


def network_fractions(structure: Structure) -> dict[str, float]:
    """Coordination fractions of the first atom's element, named by :func:`fraction_names`: carbon's
    hybridisation (:func:`hybridisation_fractions`), else the fractions of 3-, 4- and 5-fold atoms with the
    default bond cutoff (Si: 2.85 Å)."""
    z = int(structure.numbers[0])
    if z == _CARBON:
        found = hybridisation_fractions(structure)
        return {name: found[name] for name in fraction_names(z)}
    counts = coordination_fractions(structure, z)
    return {name: counts.get(int(name[2:]), 0.0) for name in fraction_names(z)}


def rdf(structure: Structure, r_max: float = 10.0, dr: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Total radial distribution function g(r) from a histogram of all pair distances.

    ``g(r_k) = n_k / (N ρ0 · 4π/3 [(r_k + dr)³ − r_k³])`` with ``n_k`` the number of ordered pairs in bin k,
    so that g → 1 at large r. Returns ``(r, g)``: bin centres (Å) and values, both ``(n_bins,)``.
    """
    if r_max <= 0 or dr <= 0:
        raise InputError(f"r_max and dr must be positive, got {r_max}, {dr}")
    n_bins = int(round(r_max / dr))
    edges = np.arange(n_bins + 1) * dr
    _, _, vec = pairs(structure, float(edges[-1]))
    counts, _ = np.histogram(np.linalg.norm(vec, axis=1), bins=edges)
    n = len(structure)
    shells = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = counts / (n * (n / structure.volume) * shells) if n else np.zeros(n_bins)
    return 0.5 * (edges[1:] + edges[:-1]), g


def bond_angle_distribution(structure: Structure, cutoff: float, bins: int = 180) -> tuple[np.ndarray, np.ndarray]:
    """Distribution of the angles j–i–k between every two neighbours (within ``cutoff`` Å) of every atom i.

    Returns ``(angles, density)``: bin centres in degrees over [0, 180] and a density normalised to
    integrate to 1 over degrees (all zeros when there is no angle), both ``(bins,)``.
    """
    if cutoff <= 0 or bins < 1:
        raise InputError(f"cutoff and bins must be positive, got {cutoff}, {bins}")
    i, _, vec = pairs(structure, float(cutoff))
    order = np.argsort(i, kind="stable")
    i, vec = i[order], vec[order]
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    starts = np.searchsorted(i, np.arange(len(structure) + 1))
    cosines = []
    for a in range(len(structure)):
        u = unit[starts[a] : starts[a + 1]]
        if len(u) > 1:
            upper = np.triu_indices(len(u), k=1)
            cosines.append((u @ u.T)[upper])
    cos = np.concatenate(cosines) if cosines else np.zeros(0)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    hist, edges = np.histogram(angles, bins=bins, range=(0.0, 180.0))
    width = 180.0 / bins
    density = hist / (hist.sum() * width) if hist.sum() else hist.astype(np.float64)
    return 0.5 * (edges[1:] + edges[:-1]), density


def density(structure: Structure) -> float:
    """Mass density in g/cm³."""
    return float(structure.density)


def min_distance(structure: Structure) -> float:
    """Shortest interatomic distance (Å), periodic images included (an atom and its own image too).

    ``inf`` for a single atom without periodicity.
    """
    n = len(structure)
    cart = structure.cart
    periodic = [float(np.linalg.norm(structure.cell[k])) for k in range(3) if structure.pbc[k]]
    if periodic:
        bound = min(periodic)  # the atom's own image along that lattice vector
    elif n >= 2:
        bound = float(np.linalg.norm(np.ptp(cart, axis=0)))
    else:
        return math.inf
    bound = bound * (1.0 + 1e-9) + 1e-9
    cutoff = min(3.0, bound)
    while True:
        _, _, vec = pairs(structure, cutoff)
        if len(vec):
            return float(np.linalg.norm(vec, axis=1).min())
        if cutoff >= bound:  # pragma: no cover - the bound always has a pair
            return math.inf
        cutoff = min(2.0 * cutoff, bound)


def describe(structure: Structure, cutoff: Cutoff = None) -> dict[str, float | int | str | None]:
    """All scalar descriptors of a structure as a JSON-serialisable dict.

    ``cutoff`` is the bond cutoff for coordination (see :func:`coordination_numbers`); a single number is
    also used for the carbon sp/sp2/sp3 fractions.

    Keys: ``n_atoms``, ``formula``, ``density_g_cm3``, ``volume_A3``, ``min_distance_A`` (None when
    undefined), ``mean_coordination`` (default cutoffs), ``mean_coordination_<El>`` for each element, and for
    structures with carbon ``sp_fraction``, ``sp2_fraction``, ``sp3_fraction``, ``other_fraction``.
    """
    n = len(structure)
    dmin = min_distance(structure) if n else math.inf
    out: dict[str, float | int | str | None] = {
        "n_atoms": n,
        "formula": structure.formula,
        "density_g_cm3": density(structure),
        "volume_A3": float(structure.volume),
        "min_distance_A": dmin if math.isfinite(dmin) else None,
    }
    cn = coordination_numbers(structure, cutoff)
    out["mean_coordination"] = float(cn.mean()) if n else None
    for z in np.unique(structure.numbers):
        out[f"mean_coordination_{chemical_symbols[int(z)]}"] = float(cn[structure.numbers == z].mean())
    if (structure.numbers == _CARBON).any():
        carbon_cutoff = float(cutoff) if isinstance(cutoff, int | float) else CARBON_CUTOFF
        for name, value in hybridisation_fractions(structure, carbon_cutoff).items():
            out[f"{name}_fraction"] = value
    return out
