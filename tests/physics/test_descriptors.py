"""Structure descriptors on crystals whose answers are known by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from atomdiff.errors import InputError
from atomdiff.physics.descriptors import (
    bond_angle_distribution,
    bond_cutoff,
    coordination_numbers,
    density,
    describe,
    hybridisation_fractions,
    min_distance,
    rdf,
)
from atomdiff.structure import Structure

A_DIAMOND = 3.567
TETRAHEDRAL = math.degrees(math.acos(-1.0 / 3.0))  # 109.47°


def _diamond(a: float = A_DIAMOND) -> Structure:
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    return Structure([6] * 8, np.vstack([fcc, fcc + 0.25]), np.eye(3) * a)


def _graphite(a: float = 2.464, c: float = 6.711) -> Structure:
    cell = [[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c]]
    frac = [[0, 0, 0.25], [0, 0, 0.75], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]
    return Structure([6] * 4, frac, cell)


def _fcc_cu(a: float = 3.615) -> Structure:
    return Structure([29] * 4, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]], np.eye(3) * a)


def _peak(structure: Structure, cutoff: float) -> float:
    angles, dens = bond_angle_distribution(structure, cutoff)
    assert dens.sum() * (angles[1] - angles[0]) == pytest.approx(1.0)
    return float(angles[np.argmax(dens)])


def test_diamond():
    s = _diamond()
    assert np.array_equal(coordination_numbers(s), [4] * 8)
    assert hybridisation_fractions(s) == {"sp": 0.0, "sp2": 0.0, "sp3": 1.0, "other": 0.0}
    assert abs(_peak(s, 1.85) - TETRAHEDRAL) <= 0.5  # 1° bins
    assert min_distance(s) == pytest.approx(math.sqrt(3) * A_DIAMOND / 4, abs=1e-12)
    assert 3.51 <= density(s) <= 3.53


def test_graphite():
    s = _graphite()
    assert np.array_equal(coordination_numbers(s), [3] * 4)
    assert hybridisation_fractions(s)["sp2"] == 1.0
    assert abs(_peak(s, 1.85) - 120.0) <= 0.5
    assert min_distance(s) == pytest.approx(2.464 / math.sqrt(3), abs=1e-12)


def test_fcc_copper_coordination():
    s = _fcc_cu()
    assert np.array_equal(coordination_numbers(s, 3.0), [12] * 4)
    assert np.array_equal(coordination_numbers(s), [12] * 4)  # 1.2 × 2 r_cov(Cu) = 3.17 Å
    assert np.array_equal(coordination_numbers(s, {("Cu", "Cu"): 3.7}), [18] * 4)
    assert abs(_peak(s, 3.0) - 60.0) <= 0.5  # 60°, 90°, 120°, 180° occur; 60° most often


def test_cutoff_rules_and_mixed_dictionary():
    assert bond_cutoff(6, 6) == 1.85
    assert bond_cutoff(6, 8) == pytest.approx(1.2 * (0.76 + 0.66))
    # rock salt NaCl, Na–Cl = 2.82 Å: default 1.2 × (1.66 + 1.02) = 3.2 Å bonds the six Cl
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    nacl = Structure([11] * 4 + [17] * 4, np.vstack([fcc, fcc + [0.5, 0, 0]]), np.eye(3) * 5.64)
    assert np.array_equal(coordination_numbers(nacl), [6] * 8)
    assert np.array_equal(coordination_numbers(nacl, {("Cl", "Na"): 2.0}), [0] * 8)
    # Na–Na and Cl–Cl at 3.99 Å join with a long like-pair cutoff, only for that pair
    cn = coordination_numbers(nacl, {("Na", "Na"): 4.0})
    assert np.array_equal(cn, [18] * 4 + [6] * 4)
    with pytest.raises(InputError):
        coordination_numbers(nacl, -1.0)


def test_min_distance_own_image():
    cubic = Structure([29], [[0.3, 0.1, 0.7]], np.eye(3) * 2.0)
    assert min_distance(cubic) == pytest.approx(2.0, abs=1e-12)
    big = Structure([29], [[0, 0, 0]], np.diag([7.5, 9.0, 12.0]))  # beyond the first guess of 3 Å
    assert min_distance(big) == pytest.approx(7.5, abs=1e-12)
    skew = Structure([8, 8], [[0, 0, 0], [0.98, 0.02, 0.5]], [[4.0, 0, 0], [3.9, 1.0, 0], [0, 0, 9.0]])
    cart = skew.cart
    brute = min(
        np.linalg.norm(cart[j] - cart[i] + np.array(n) @ skew.cell)
        for n in np.ndindex(5, 5, 5)
        for i in range(2)
        for j in range(2)
        if i != j or any(k != 2 for k in n)
        for n in [np.array(n) - 2]
    )
    assert min_distance(skew) == pytest.approx(brute, abs=1e-12)
    assert brute < 1.01  # an own image along b − a, shorter than every lattice vector of the cell


def test_rdf_normalisation():
    r, g = rdf(_fcc_cu(), r_max=6.0, dr=0.05)
    assert r[0] == pytest.approx(0.025) and len(r) == 120
    rho0 = 4 / 3.615**3
    shells = 4 * np.pi * r**2 * 0.05
    assert np.sum((rho0 * shells * g)[r < 3.1]) == pytest.approx(12.0, rel=1e-3)
    assert r[np.argmax(g)] == pytest.approx(3.615 / math.sqrt(2), abs=0.05)
    rng = np.random.default_rng(0)
    gas = Structure([18] * 500, rng.random((500, 3)), np.eye(3) * 20.0)
    _, g_gas = rdf(gas, r_max=8.0, dr=0.1)
    assert abs(g_gas[40:].mean() - 1.0) < 0.03


def test_describe_is_json_and_complete():
    d = describe(_diamond())
    json.dumps(d, allow_nan=False)
    assert d["n_atoms"] == 8 and d["formula"] == "C8"
    assert d["mean_coordination"] == 4.0 and d["mean_coordination_C"] == 4.0
    assert d["sp3_fraction"] == 1.0 and d["sp2_fraction"] == 0.0
    assert d["min_distance_A"] == pytest.approx(math.sqrt(3) * A_DIAMOND / 4)
    assert d["volume_A3"] == pytest.approx(A_DIAMOND**3)
    cu = describe(_fcc_cu())
    json.dumps(cu, allow_nan=False)
    assert "sp3_fraction" not in cu and cu["mean_coordination_Cu"] == 12.0
    with pytest.raises(InputError):
        hybridisation_fractions(_fcc_cu())


def test_silicon_bond_cutoff_and_coordination_fractions():
    from ase.build import bulk

    from atomdiff.physics.descriptors import coordination_fractions

    assert bond_cutoff(14, 14) == 2.85
    si = Structure.from_ase(bulk("Si", "diamond", a=5.431).repeat(2))
    assert coordination_fractions(si, 14) == {4: 1.0}
    squeezed = si.replace(cell=si.cell * 0.9)  # second neighbours at 3.46 Å stay outside 2.85 Å
    assert coordination_fractions(squeezed, 14) == {4: 1.0}
    sparse = si.replace(cell=si.cell * 1.25)  # bonds 2.94 Å: none
    assert coordination_fractions(sparse, 14) == {0: 1.0}
    with pytest.raises(InputError, match="no atom of C"):
        coordination_fractions(si, 6)
