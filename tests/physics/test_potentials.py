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


def _lj_starts() -> list[Structure]:
    rng = np.random.default_rng(0)
    fcc = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return [
        Structure([29] * 4, fcc + rng.normal(0, 0.02, (4, 3)), np.eye(3) * a + rng.normal(0, 0.05, (3, 3)))
        for a in (3.6, 3.9, 3.8)
    ] + [Structure([29] * 4, fcc, np.eye(3) * 3.8)]


@pytest.mark.parametrize(("cell", "cell_filter"), [(True, "frechet"), (True, "unit"), (False, "frechet")])
def test_lockstep_relaxation_takes_exactly_the_steps_of_one_by_one_relaxations(cell, cell_filter):
    """relax_structures batches the evaluations of several FIRE relaxations; each structure must follow the
    same path as relax_structure alone (same positions, cell and energy), including the one that collapses
    (σ = 1 Å on the last start: NaN energy) and ones that converge at different steps, with either cell
    filter."""
    from ase.calculators.lj import LennardJones

    from atomdiff.physics.potentials import relax_structure, relax_structures

    starts = _lj_starts()
    calc = LennardJones(sigma=2.4, rc=6.0)
    ticks = []
    together = relax_structures(
        starts, calc, steps=150, fmax=0.02, cell=cell, cell_filter=cell_filter, progress=lambda d, t: ticks.append(d)
    )
    for start, (structure, energy) in zip(starts, together, strict=True):
        alone, e_alone = relax_structure(
            start, LennardJones(sigma=2.4, rc=6.0), steps=150, fmax=0.02, cell=cell, cell_filter=cell_filter
        )
        np.testing.assert_allclose(structure.cell, alone.cell, atol=1e-10)
        np.testing.assert_allclose(structure.frac, alone.frac, atol=1e-10)
        assert energy == pytest.approx(e_alone, abs=1e-10)
    assert ticks and ticks[-1] <= 150
    collapsing = relax_structures(starts[-1:], LennardJones(sigma=1.0, rc=6.0), steps=300, cell_filter=cell_filter)
    assert math.isnan(collapsing[0][1]) and collapsing[0][0].volume < 0.6 * starts[-1].volume


def test_both_cell_filters_reach_the_same_relaxed_cell_and_an_unknown_one_is_refused():
    """UnitCellFilter and FrechetCellFilter parameterise the cell differently but have the same stationary
    points: a strained fcc Lennard-Jones cell relaxes to the same volume and energy with either."""
    from ase.calculators.lj import LennardJones

    from atomdiff.physics.potentials import relax_structure

    start = _lj_starts()[0]
    (frechet, e_frechet), (unit, e_unit) = (
        relax_structure(start, LennardJones(sigma=2.4, rc=6.0), steps=400, fmax=1e-3, cell_filter=name)
        for name in ("frechet", "unit")
    )
    assert unit.volume == pytest.approx(frechet.volume, rel=1e-3)
    assert e_unit == pytest.approx(e_frechet, abs=1e-5)
    with pytest.raises(InputError, match="cell filter"):
        relax_structure(start, LennardJones(sigma=2.4, rc=6.0), steps=5, cell_filter="exp")


def test_batched_chgnet_evaluation_equals_its_ase_calculator():
    """One batched CHGNet call for several cells gives each cell's energy, forces and stress as CHGNet's own
    ASE calculator does for it alone."""
    from ase.calculators.calculator import all_changes

    from atomdiff.physics.potentials import batch_evaluator, chgnet_calculator

    calc = chgnet_calculator()
    rng = np.random.default_rng(1)
    zb = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cells = [
        Structure([30] * 4 + [16] * 4, np.vstack([zb, zb + 0.25]) + rng.normal(0, 0.01, (8, 3)), np.eye(3) * 5.45),
        Structure([29, 29, 50, 16, 16, 16], rng.random((6, 3)) * 0.9, np.diag([5.0, 5.5, 6.0])),
    ]
    atoms = [c.to_ase() for c in cells]
    batched = batch_evaluator(calc)(atoms)
    for a, (e, f, s) in zip(atoms, batched, strict=True):
        calc.calculate(a, ["energy", "forces", "stress"], all_changes)
        assert e == pytest.approx(float(calc.results["energy"]), abs=1e-4)
        np.testing.assert_allclose(f, calc.results["forces"], atol=1e-4)
        np.testing.assert_allclose(s, calc.results["stress"], atol=1e-5)
