"""Space-group constraints: the right number of free parameters, moves along them keep the group, and a
constrained refinement recovers a free coordinate while the structure stays in its space group."""

from __future__ import annotations

import numpy as np
import pytest
import spglib
import torch

from atomdiff.errors import InputError
from atomdiff.physics.diffraction import PowderDiffractionModel, Profile, two_theta_grid
from atomdiff.physics.target import PatternTarget
from atomdiff.refine import RefinementStage, RietveldRefiner
from atomdiff.refine.symmetry import symmetrised, symmetry_constraints
from atomdiff.structure import Structure
from atomdiff.structure.batch import StructureBatch


def _rutile(x: float = 0.305, a: float = 4.594, c: float = 2.959) -> Structure:
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [x, x, 0], [-x, -x, 0], [0.5 + x, 0.5 - x, 0.5], [0.5 - x, 0.5 + x, 0.5]]
    return Structure([22, 22, 8, 8, 8, 8], np.asarray(frac) % 1, np.diag([a, a, c]))


def _wurtzite(u: float = 0.382, a: float = 3.25, c: float = 5.21) -> Structure:
    cell = [[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]]
    frac = [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, u], [2 / 3, 1 / 3, 0.5 + u]]
    return Structure([30, 30, 8, 8], frac, cell)


def _kesterite(a: float = 5.427, c: float = 10.871) -> Structure:
    x, y, z = 0.7560, 0.7566, 0.8722  # S on 8g of I-4
    base = [(0, 0, 0), (0, 0.5, 0.25), (0, 0.5, 0.75), (0, 0, 0.5)]
    s = [(x, y, z), (-x, -y, z), (y, -x, -z), (-y, x, -z)]
    frac = [*base, *s]
    frac = frac + [tuple(v + 0.5 for v in p) for p in frac]
    return Structure([29, 29, 30, 50, 16, 16, 16, 16] * 2, np.asarray(frac) % 1, np.diag([a, a, c]))


def _perovskite(a: float = 3.905) -> Structure:
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure([38, 22, 8, 8, 8], frac, np.eye(3) * a)


def _monoclinic() -> Structure:
    # a P2_1/c cell with two atoms on general positions: 4 lattice parameters, 6 coordinates
    a, b, c, beta = 5.1, 5.2, 5.3, np.radians(99.0)
    cell = [[a, 0, 0], [0, b, 0], [c * np.cos(beta), 0, c * np.sin(beta)]]
    general = [(0.276, 0.04, 0.208), (0.07, 0.332, 0.345)]
    frac = []
    for x, y, z in general:
        frac += [(x, y, z), (-x, 0.5 + y, 0.5 - z), (-x, -y, -z), (x, 0.5 - y, 0.5 + z)]
    return Structure([40] * 4 + [8] * 4, np.asarray(frac) % 1, cell)


def _from_spacegroup(symbol: str, lattice, species: list[str], coords: list[list[float]], primitive: bool):
    from pymatgen.core import Structure as PymatgenStructure

    pm = PymatgenStructure.from_spacegroup(symbol, lattice, species, coords)
    return Structure.from_pymatgen(pm.get_primitive_structure() if primitive else pm)


def _bi2se3(primitive: bool = False) -> Structure:  # R-3m, hexagonal setting or rhombohedral primitive cell
    from pymatgen.core import Lattice

    coords = [[0, 0, 0.4008], [0, 0, 0], [0, 0, 0.2117]]
    return _from_spacegroup("R-3m", Lattice.hexagonal(4.14, 28.6), ["Bi", "Se", "Se"], coords, primitive)


def _calcite(primitive: bool = False) -> Structure:  # R-3c: O on 18e (x, 0, 1/4)
    from pymatgen.core import Lattice

    coords = [[0, 0, 0], [0, 0, 0.25], [0.257, 0, 0.25]]
    return _from_spacegroup("R-3c", Lattice.hexagonal(4.99, 17.06), ["Ca", "C", "O"], coords, primitive)


def _herzenbergite() -> Structure:  # SnS, Pnma: Sn and S on 4c (x, 1/4, z)
    from pymatgen.core import Lattice

    coords = [[0.118, 0.25, 0.103], [0.852, 0.25, 0.479]]
    return _from_spacegroup("Pnma", Lattice.orthorhombic(11.2, 3.99, 4.33), ["Sn", "S"], coords, False)


def _triclinic() -> Structure:
    from pymatgen.core import Lattice

    coords = [[0.1, 0.2, 0.3], [0.3, 0.1, 0.7]]
    return _from_spacegroup("P-1", Lattice.from_parameters(5, 6, 7, 80, 85, 95), ["Si", "O"], coords, False)


def _group(structure: Structure, symprec: float = 1e-5) -> int:
    return spglib.get_symmetry_dataset((structure.cell, structure.frac % 1, structure.numbers), symprec=symprec).number


@pytest.mark.parametrize(
    ("make", "number", "n_lattice", "n_positions"),
    [
        (_perovskite, 221, 1, 0),  # Pm-3m: a; every atom on a site without freedom
        (_rutile, 136, 2, 1),  # P4_2/mnm: a, c; O on 4f (x, x, 0)
        (_wurtzite, 186, 2, 2),  # P6_3mc: a, c; z of Zn and of O on 2b (one of them is the polar origin)
        (_kesterite, 82, 2, 3),  # I-4: a, c; S on 8g (x, y, z)
        (_monoclinic, 14, 4, 6),  # P2_1/c: a, b, c, β; two general positions
        (_bi2se3, 166, 2, 2),  # R-3m (hexagonal setting): a, c; z of Bi and of one Se
        (lambda: _bi2se3(primitive=True), 166, 2, 2),  # the same in the rhombohedral primitive cell
        (_calcite, 167, 2, 1),  # R-3c: a, c; O x
        (_herzenbergite, 62, 3, 4),  # Pnma: a, b, c; x, z of Sn and of S
        (_triclinic, 2, 6, 6),  # P-1: everything but the inversion pairs
    ],
)
def test_free_parameters_of_the_space_group(make, number, n_lattice, n_positions):
    structure = make()
    constraints = symmetry_constraints(structure)
    assert constraints.space_group.endswith(f"({number})")
    assert (constraints.n_lattice, constraints.n_positions) == (n_lattice, n_positions)
    # every atom of an orbit is the same element
    for rep in np.unique(constraints.orbits):
        assert len(set(structure.numbers[constraints.orbits == rep])) == 1


@pytest.mark.parametrize(
    "make", [_rutile, _wurtzite, _kesterite, _monoclinic, _bi2se3, lambda: _calcite(True), _herzenbergite, _triclinic]
)
def test_moves_along_the_free_parameters_keep_the_space_group(make):
    structure = make()
    constraints = symmetry_constraints(structure)
    number = _group(structure)
    rng = np.random.default_rng(0)
    theta = rng.uniform(-0.02, 0.02, constraints.n_positions)
    moved = structure.frac + (constraints.position_basis @ theta).reshape(-1, 3)
    eps = (constraints.strain_basis @ rng.uniform(-0.03, 0.03, constraints.n_lattice))[[0, 3, 4, 3, 1, 5, 4, 5, 2]]
    cell = structure.cell @ (np.eye(3) + eps.reshape(3, 3))
    changed = structure.replace(frac=moved, cell=cell)
    assert _group(changed) == number
    assert np.abs(changed.frac - structure.frac).max() > 1e-3 or constraints.n_positions == 0
    # and a move that is not allowed breaks it (any one coordinate of one atom)
    broken = structure.frac.copy()
    broken[0] += [0.011, 0.007, 0.013]
    assert _group(structure.replace(frac=broken)) != number


def test_symmetrised_makes_an_approximate_structure_exact_in_place():
    truth = _rutile()
    rng = np.random.default_rng(1)
    noisy = truth.replace(
        frac=truth.frac + rng.normal(0, 0.003, truth.frac.shape), cell=truth.cell + rng.normal(0, 0.004, (3, 3))
    )
    assert _group(noisy) == 1
    exact = symmetrised(noisy, symprec=0.1)
    assert _group(exact, 1e-6) == 136
    # same setting and atom order, atoms moved by less than the noise
    assert np.abs(exact.cart - noisy.cart).max() < 0.05
    assert list(exact.numbers) == list(noisy.numbers)
    assert abs(exact.volume / noisy.volume - 1) < 1e-2
    # a structure without symmetry within the tolerance is returned as it was
    assert symmetrised(noisy, symprec=1e-4) is noisy


def _target(structure: Structure) -> PatternTarget:
    x = two_theta_grid(15, 110, 0.02)
    truth = PowderDiffractionModel("xray", "CuKa1", x, profile=Profile(0.004, -0.002, 0.006, 0.4, cutoff=20), b_iso=0.4)
    y = truth(StructureBatch.from_structures([structure])).y[0]
    y = torch.as_tensor(np.random.default_rng(0).poisson((y / y.max() * 3e4 + 100).numpy()).astype(float))
    return PatternTarget(PowderDiffractionModel("xray", "CuKa1", x, profile=Profile(cutoff=20)), y)


def test_refinement_in_the_space_group_recovers_the_free_coordinate_and_keeps_the_group():
    target = _target(_rutile(x=0.305))
    start = _rutile(x=0.29, a=4.60, c=2.955)
    rng = np.random.default_rng(2)
    start = start.replace(frac=start.frac + rng.normal(0, 0.002, start.frac.shape))  # slightly off P4_2/mnm
    stages = (
        RefinementStage(("lattice", "zero_shift", "profile"), 0.0, 6),
        RefinementStage(("lattice", "zero_shift", "profile", "b_iso", "positions"), 0.0, 8),
    )
    profile = Profile(0, 0, 0.01, 0.5, cutoff=20)
    constrained = RietveldRefiner(target, profile, stages=stages, volume_scan=None, symmetry=0.1).refine([start])[0]
    assert constrained.space_group == "P4_2/mnm (136)"
    refined = constrained.structure
    assert _group(refined, 1e-6) == 136
    o = (refined.frac[2] - refined.frac[0]) % 1  # O relative to Ti (symmetrising may move the origin)
    assert o[0] == pytest.approx(0.305, abs=2e-3) and o[1] == pytest.approx(o[0], abs=1e-9) and o[2] < 1e-9
    a, _, c, *_ = refined.lattice_parameters
    assert a == pytest.approx(4.594, abs=2e-3) and c == pytest.approx(2.959, abs=2e-3)
    # 2 lattice + 1 coordinate + 2 B + zero + U, V, W, eta + scale + background
    p1 = RietveldRefiner(target, profile, stages=stages, volume_scan=None).refine([start])[0]
    assert p1.space_group is None
    assert constrained.n_parameters == p1.n_parameters - (6 - 2) - (18 - 1)
    w = target.weights
    r_exp = float(torch.sqrt(target.y_obs.shape[0] / (w * target.y_obs**2).sum()))
    assert constrained.rwp < 1.1 * r_exp


def test_symmetry_tolerance_must_be_positive():
    with pytest.raises(InputError, match="symmetry tolerance"):
        RietveldRefiner(_target(_perovskite()), symmetry=0.0)


def test_a_structure_whose_group_cannot_be_used_is_refined_in_p1(monkeypatch):
    import atomdiff.refine.rietveld as rietveld

    def refuse(structure, symprec=1e-3):
        raise InputError("no")

    monkeypatch.setattr(rietveld, "symmetry_constraints", refuse)
    target = _target(_rutile())
    stages = (RefinementStage(("lattice", "zero_shift", "positions"), 0.0, 2),)
    (result,) = RietveldRefiner(target, stages=stages, volume_scan=None, symmetry=0.1).refine([_rutile()])
    assert result.space_group == "P1 (1)" and np.isfinite(result.rwp)
