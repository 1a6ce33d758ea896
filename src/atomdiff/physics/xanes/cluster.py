"""Finite clusters cut from a periodic structure around an absorbing atom."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from vesin import NeighborList

from atomdiff.errors import InputError
from atomdiff.structure.structure import Structure


@dataclasses.dataclass(frozen=True, eq=False)
class Cluster:
    """Atoms around one absorbing site, the absorber first and at the origin.

    Attributes:
        site: index of the absorbing atom in the periodic structure.
        numbers: atomic numbers, shape ``(n,)``; ``numbers[0]`` is the absorber.
        positions: Cartesian positions relative to the absorber in Å, shape ``(n, 3)``, sorted by distance.
    """

    site: int
    numbers: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def distances(self) -> np.ndarray:
        """Distance of every atom from the absorber, Å."""
        return np.linalg.norm(self.positions, axis=1)


def cut_clusters(structure: Structure, sites: Sequence[int], radius: float) -> list[Cluster]:
    """One cluster per site: every atom (periodic images included) closer than ``radius`` Å to the site.

    Images of the absorber itself count as neighbours, so cells smaller than the cluster are handled.
    Atoms are sorted by distance, ties broken by atomic number and position, so the order is reproducible.
    """
    if not np.isfinite(radius) or radius <= 0:
        raise InputError(f"cluster radius must be a positive number of Å, got {radius}")
    n = len(structure)
    for site in sites:
        if not 0 <= site < n:
            raise InputError(f"site {site} is not an atom of the structure (it has {n} atoms, indices 0..{n - 1})")
    calculator = NeighborList(cutoff=float(radius), full_list=True)
    i, j, vectors = calculator.compute(
        np.ascontiguousarray(structure.cart), structure.cell, list(structure.pbc), quantities="ijD"
    )
    clusters = []
    for site in sites:
        mask = i == site
        positions = np.vstack([np.zeros((1, 3)), vectors[mask]])
        numbers = np.concatenate([[structure.numbers[site]], structure.numbers[j[mask]]])
        distances = np.linalg.norm(positions, axis=1)
        rounded = np.round(positions, 6)
        order = np.lexsort((rounded[:, 2], rounded[:, 1], rounded[:, 0], numbers, np.round(distances, 6)))
        order = np.concatenate([[0], order[order != 0]])  # the absorber stays first
        clusters.append(Cluster(int(site), numbers[order].astype(np.int64), positions[order]))
    return clusters
