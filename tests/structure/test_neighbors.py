"""Neighbour lists against ASE's independent implementation, including cutoffs larger than the cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list as ase_neighbor_list

from atomdiff.structure import Structure, StructureBatch, neighbor_list


def _pairs(i, j, d):
    return sorted(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), np.round(np.asarray(d), 8).tolist(), strict=True))


@pytest.mark.parametrize("cutoff", [2.5, 6.0, 9.0])
def test_matches_ase_on_small_skewed_cells(cutoff):
    rng = np.random.default_rng(4)
    cells = [
        np.array([[2.1, 0, 0], [1.8, 1.9, 0], [0.9, 0.7, 2.3]]),  # strongly skewed, shorter than the cutoff
        np.array([[3.0, 0.0, 0.0], [0.0, 3.2, 0.0], [0.0, 0.0, 2.9]]),
        np.array([[1.5, 0.0, 0.0], [-0.7, 1.4, 0.0], [0.2, 0.3, 1.7]]),  # one-atom-wide cell
    ]
    structures = [
        Structure(rng.integers(1, 10, size=n), rng.random((n, 3)), c) for c, n in zip(cells, (4, 3, 1), strict=True)
    ]
    batch = StructureBatch.from_structures(structures)
    nl = neighbor_list(batch, cutoff)
    d = nl.distances(batch).detach().numpy()
    offset = 0
    for b, s in enumerate(structures):
        ai, aj, ad = ase_neighbor_list("ijd", s.to_ase(), cutoff)
        sel = (nl.batch_idx == b).numpy()
        ours = _pairs(nl.i.numpy()[sel] - offset, nl.j.numpy()[sel] - offset, d[sel])
        assert ours == _pairs(ai, aj, ad)
        offset += len(s)


def test_vectors_are_differentiable_wrt_frac_and_cell():
    s = Structure([6, 6], [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.diag([2.0, 2.5, 3.0]))
    batch = StructureBatch.from_structures([s])
    nl = neighbor_list(batch, 3.0)
    frac = batch.frac.clone().requires_grad_(True)
    cell = batch.cell.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f, c: nl.distances(batch.replace(frac=f, cell=c)), (frac, cell))


def test_unwrapped_coordinates_give_the_same_distances():
    s = Structure([8, 1, 1], [[0.1, 0.1, 0.1], [0.9, 0.2, 0.1], [0.3, 0.95, 0.5]], np.eye(3) * 4.0)
    shifted = s.replace(frac=s.frac + np.array([[3, -1, 0], [0, 0, 2], [-5, 1, 1]]))
    dist = []
    for x in (s, shifted):
        batch = StructureBatch.from_structures([x])
        dist.append(np.sort(neighbor_list(batch, 5.0).distances(batch).numpy()))
    np.testing.assert_allclose(dist[0], dist[1], atol=1e-12)
