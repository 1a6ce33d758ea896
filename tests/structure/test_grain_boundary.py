"""CSL bicrystals from pymatgen's builder (atomdiff.structure.grain_boundary) and their energies."""

import numpy as np
import pytest

from atomdiff.errors import InputError
from atomdiff.physics.potentials import bulk_reference, calculator, relax
from atomdiff.structure.grain_boundary import build_bicrystal, csl_angle
from atomdiff.tasks.grain_boundary import gb_energy


def test_sigma5_twist_of_bcc_w_has_the_csl_cell():
    a = 3.165
    b = build_bicrystal("W", "bcc", a, 5, (1, 0, 0), "twist")
    cell = b.structure.cell
    assert b.angle == pytest.approx(36.8699, abs=1e-3)
    assert b.area == pytest.approx(5 * a * a, rel=1e-6)  # the Σ5 (100) CSL cell is √5a × √5a
    assert abs(cell[2, 0]) < 1e-9 and abs(cell[2, 1]) < 1e-9  # normal along z
    assert set(np.unique(b.grain)) == {0, 1}
    d = b.distance_to_boundary()
    assert d.min() == pytest.approx(0.0, abs=1e-6) and d.max() <= cell[2, 2] / 4 + 1e-6


def test_symmetric_tilt_needs_an_axis_and_a_plane_that_contains_it():
    with pytest.raises(InputError, match="axis"):
        build_bicrystal("W", "bcc", 3.165, 5, (3, 1, 0), "tilt")
    assert csl_angle(5, (0, 0, 1), (3, 1, 0), "tilt") == pytest.approx(36.87, abs=0.01)
    with pytest.raises(InputError, match="not a twist plane"):
        csl_angle(5, (1, 0, 0), (0, 1, 0), "twist")
    with pytest.raises(InputError, match="no Σ7"):
        csl_angle(7, (1, 0, 0), (1, 0, 0), "twist")


def test_coherent_twin_costs_far_less_than_a_twist_boundary_and_energies_converge_with_thickness():
    ref = bulk_reference("Cu", potential="eam")  # Mishin et al. 2001
    calc = calculator("Cu", "eam")

    def energy(sigma, plane, expand_times):
        b = build_bicrystal("Cu", "fcc", ref.lattice_constant, sigma, plane, "twist", expand_times=expand_times)
        out = relax(b.structure.to_ase(), calc, fmax=0.02)
        return gb_energy(out.energy, len(out.atoms), ref, b.area)

    twin = energy(3, (1, 1, 1), 2)
    twist = [energy(5, (1, 0, 0), k) for k in (2, 3)]
    assert 0.005 < twin < 0.05  # a coherent Σ3 twin: a stacking change only (EMT makes it slightly negative)
    assert 0.4 < twist[0] < 1.5 and twist[1] == pytest.approx(twist[0], abs=0.03)
