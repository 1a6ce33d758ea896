"""CSL bicrystals from pymatgen's builder (atomdiff.structure.grain_boundary) and their energies."""

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from atomdiff.errors import InputError
from atomdiff.physics.potentials import bulk_reference, calculator, relax
from atomdiff.structure.grain_boundary import build_bicrystal, csl_angle, grain_crystal
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


@pytest.mark.parametrize(
    ("element", "lattice", "a", "sigma", "plane", "kind", "axis", "in_plane"),
    [
        ("W", "bcc", 3.0, 5, (1, 0, 0), "twist", None, (2, 2)),
        ("W", "bcc", 3.0, 5, (3, 1, 0), "tilt", (0, 0, 1), (1, 1)),
        ("Cu", "fcc", 3.6, 3, (1, 1, 1), "twist", None, (2, 1)),
    ],
)
def test_grain_crystal_continues_each_grain_through_the_whole_cell(
    element, lattice, a, sigma, plane, kind, axis, in_plane
):
    b = build_bicrystal(element, lattice, a, sigma, plane, kind, axis, expand_times=2, in_plane=in_plane)
    assert np.all(b.grain == np.where(b.structure.frac[:, 2] % 1.0 >= 0.5, 0, 1))  # labels survive a supercell
    per_atom = a**3 / (2 if lattice == "bcc" else 4)
    crystals = [grain_crystal(b, half) for half in (0, 1)]
    for half, crystal in enumerate(crystals):
        assert len(crystal) == pytest.approx(b.structure.volume / per_atom, abs=1e-6)  # a perfect, full crystal
        # every atom of the grain away from the boundaries sits on a site of its crystal, none of the other's
        c = b.structure.frac[:, 2] % 1.0
        own = (c > 0.5) == (half == 1)
        interior = own & (b.distance_to_boundary() > 1.0)

        def nearest(frac, sites):
            delta = frac[:, None, :] - sites[None, :, :]
            delta -= np.round(delta)
            return np.linalg.norm(delta @ b.structure.cell, axis=-1).min(axis=1)

        assert nearest(b.structure.frac[interior], crystal.frac).max() < 1e-4  # the builder rounds to ~1e-6 Å
        other = crystals[1 - half]
        assert nearest(b.structure.frac[interior], other.frac).max() > 0.3  # the grains differ in orientation
        # nearest-neighbour shell of the lattice: 8 at a√3/2 (bcc) or 12 at a/√2 (fcc) for every atom
        first = a * (np.sqrt(3) / 2 if lattice == "bcc" else np.sqrt(0.5))
        i, d = neighbor_list("id", crystal.to_ase(), first * 1.05)
        assert np.abs(d - first).max() < 1e-4
        assert np.all(np.bincount(i, minlength=len(crystal)) == (8 if lattice == "bcc" else 12))


def test_merge_ratio_zero_keeps_every_site_of_both_grains():
    merged = build_bicrystal("W", "bcc", 3.0, 5, (1, 0, 0), "twist", expand_times=2)
    full = build_bicrystal("W", "bcc", 3.0, 5, (1, 0, 0), "twist", expand_times=2, rm_ratio=0.0)
    assert len(full.structure) == pytest.approx(full.structure.volume / (3.0**3 / 2), abs=1e-6)
    assert len(merged.structure) < len(full.structure)  # pymatgen merges close pairs across the boundary


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
