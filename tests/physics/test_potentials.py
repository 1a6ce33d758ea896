"""Interatomic potentials through ASE (atomdiff.physics.potentials): bulk references against published
values, relaxation, and clear errors."""

import math

import numpy as np
import pytest
from ase.build import bulk
from ase.eos import EquationOfState

from atomdiff.errors import InputError
from atomdiff.physics.potentials import bulk_reference, calculator, relax, resolve_potential
from atomdiff.structure import Structure


def test_emt_bulk_reference_matches_an_independent_equation_of_state_fit():
    ref = bulk_reference("Cu", potential="emt")
    calc = calculator("Cu", "emt")
    volumes, energies = [], []
    for a in np.linspace(3.5, 3.7, 9):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    v0, e0, _ = EquationOfState(volumes, energies).fit()
    assert ref.lattice_constant == pytest.approx(v0 ** (1 / 3), abs=2e-3)
    assert ref.energy_per_atom == pytest.approx(e0 / 4, abs=1e-4)


@pytest.mark.parametrize(
    "element, a0, e_coh",
    [("W", 3.165, 8.76), ("Cu", 3.615, 3.54)],  # Zhou et al. 2004 (W), Mishin et al. 2001 (Cu) fits
)
def test_eam_bulk_reference_reproduces_the_published_fit(element, a0, e_coh):
    ref = bulk_reference(element, potential="eam")
    assert ref.lattice_constant == pytest.approx(a0, abs=2e-3)
    assert -ref.energy_per_atom == pytest.approx(e_coh, abs=0.01)


def test_relax_removes_forces_and_lowers_the_energy():
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(0).normal(0, 0.08, atoms.positions.shape)
    calc = calculator("Cu", "emt")
    atoms.calc = calc
    before = atoms.get_potential_energy()
    out = relax(atoms, calc, fmax=0.01, relax_normal=False)
    assert out.converged and out.energy < before
    assert np.abs(out.atoms.get_forces()).max() < 0.01


def test_bad_potential_choices_are_refused():
    with pytest.raises(InputError, match="EMT does not describe W"):
        resolve_potential("W", "emt")
    with pytest.raises(InputError, match="no EAM potential"):
        resolve_potential("Zr", "eam")
    with pytest.raises(InputError, match="must be one of"):
        resolve_potential("Cu", "lj")
    assert resolve_potential("Cu", "auto") in ("eam", "emt")


def test_a_relaxation_that_collapses_the_cell_is_stopped_and_gets_no_energy():
    """Lennard-Jones with σ = 1 Å pulls a 2.7 Å fcc lattice together: the volume falls below 0.6× and the
    relaxation stops with a NaN energy; with σ at the lattice's own scale it relaxes to a finite energy."""
    from ase.calculators.lj import LennardJones

    from atomdiff.physics.potentials import relax_structure

    fcc = Structure([29] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], np.eye(3) * 3.8)
    collapsed, energy = relax_structure(fcc, LennardJones(sigma=1.0, rc=6.0), steps=300)
    assert math.isnan(energy) and collapsed.volume < 0.6 * fcc.volume
    relaxed, energy = relax_structure(fcc, LennardJones(sigma=2.4, rc=6.0), steps=300)
    assert math.isfinite(energy) and 0.6 * fcc.volume < relaxed.volume < 2.0 * fcc.volume


def test_a_fixed_cell_relaxation_moves_only_the_atoms():
    from ase.calculators.lj import LennardJones

    from atomdiff.physics.potentials import relax_structure

    frac = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0.03, 0.5, 0.5]])
    start = Structure([29] * 4, frac, np.eye(3) * 3.8)
    relaxed, energy = relax_structure(start, LennardJones(sigma=2.4, rc=6.0), steps=300, fmax=0.01, cell=False)
    assert math.isfinite(energy) and np.array_equal(relaxed.cell, start.cell)
    moved = relaxed.frac[3] - relaxed.frac[0]
    assert abs(moved[0] - round(moved[0])) < 0.005  # back on its fcc site relative to the first atom
