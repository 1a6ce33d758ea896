"""The bundled secondary phases of kesterite are the structures their docstrings describe."""

from __future__ import annotations

import numpy as np
from ase.geometry import get_distances

from atomdiff.examples import mohite, sphalerite, tin_sulfide
from atomdiff.tasks.solve import symmetry_of


def shortest(structure) -> float:
    atoms = structure.to_ase()
    d = get_distances(atoms.positions, cell=atoms.cell, pbc=True)[1]
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def test_mohite_is_monoclinic_cu2sns3_with_tetrahedral_bonds():
    s = mohite()
    assert s.formula == "Cu8S12Sn4" and len(s) == 24
    assert symmetry_of(s, 0.01)[0] == "Cc (9)"
    a, b, c, alpha, beta, gamma = s.lattice_parameters
    # the published mohite cell (6.653, 11.537, 6.665 Å, β = 109.39°)
    assert np.allclose([a, b, c], [6.653, 11.537, 6.665], rtol=1e-6) and abs(beta - 109.39) < 1e-6
    # a sphalerite superstructure: every cation has four S neighbours at 2.2–2.6 Å, every S four cations
    atoms = s.to_ase()
    d = get_distances(atoms.positions, cell=atoms.cell, pbc=True)[1]
    sulfur = atoms.numbers == 16
    for i in range(len(atoms)):
        other = ~sulfur if sulfur[i] else sulfur
        near = np.sort(d[i, other])[:5]
        assert np.all((near[:4] > 2.2) & (near[:4] < 2.6)) and near[4] > 3.5
    assert shortest(s) > 2.2


def test_the_other_secondary_phases():
    assert symmetry_of(tin_sulfide(), 0.01)[0] == "Pnma (62)" and tin_sulfide().formula == "S4Sn4"
    assert symmetry_of(sphalerite(), 0.01)[0] == "F-43m (216)" and shortest(sphalerite()) > 2.3
