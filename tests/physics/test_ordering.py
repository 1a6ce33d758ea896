"""Phase identification of ordered crystals (atomdiff.physics.ordering)."""

import numpy as np
import pytest
from ase.build import bulk

from atomdiff.physics.ordering import classify, lattice_labels
from atomdiff.structure.structure import Structure

CRYSTALS = {
    # phase: (ase.build.bulk arguments, repeats)
    "fcc": (("Cu", "fcc"), {"a": 3.6, "cubic": True}, 3),
    "bcc": (("W", "bcc"), {"a": 3.16, "cubic": True}, 3),
    "hcp": (("Mg", "hcp"), {"a": 3.21, "c": 5.21}, (4, 4, 3)),
    "diamond": (("C", "diamond"), {"a": 3.57, "cubic": True}, 2),
    "sc": (("Po", "sc"), {"a": 3.35}, 4),
    "rock-salt": (("NaCl", "rocksalt"), {"a": 5.64, "cubic": True}, 2),
    "CsCl": (("CsCl", "cesiumchloride"), {"a": 4.12}, 3),
    "zinc-blende": (("ZnS", "zincblende"), {"a": 5.41, "cubic": True}, 2),
}


def crystal(phase: str, noise: float = 0.0, seed: int = 0) -> Structure:
    args, kwargs, reps = CRYSTALS[phase]
    atoms = bulk(*args, **kwargs).repeat(reps)
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(0.0, noise, atoms.positions.shape)
    atoms.rotate(37.0, (1, 2, 3), rotate_cell=True)  # orientation must not matter
    return Structure.from_ase(atoms)


@pytest.mark.parametrize("phase", list(CRYSTALS))
def test_every_phase_is_identified_perfect_with_thermal_noise(phase):
    for noise in (0.0, 0.05):
        result = classify(crystal(phase, noise))
        assert result.phase == phase
        assert result.perfect and result.ordered_fraction == 1.0


def test_a_vacancy_makes_the_sample_imperfect_but_keeps_its_phase():
    s = crystal("fcc")
    keep = np.arange(len(s)) != 5
    result = classify(Structure(s.numbers[keep], s.frac[keep], s.cell))
    assert result.phase == "fcc"
    assert not result.perfect and 0.8 < result.ordered_fraction < 1.0


def test_antisite_defects_break_the_binary_order():
    s = crystal("rock-salt")
    numbers = s.numbers.copy()
    na, cl = np.where(numbers == 11)[0][0], np.where(numbers == 17)[0][0]
    numbers[na], numbers[cl] = 17, 11
    result = classify(Structure(numbers, s.frac, s.cell))
    assert result.phase == "rock-salt" and result.lattice == "sc"
    assert not result.perfect and result.ordered_fraction < 1.0


def test_random_species_on_a_bcc_lattice_are_not_cscl():
    s = crystal("CsCl")
    numbers = np.random.default_rng(1).permutation(s.numbers)
    result = classify(Structure(numbers, s.frac, s.cell))
    assert result.lattice == "bcc" and not result.perfect and result.ordered_fraction < 0.5


def test_two_species_on_fcc_are_no_phase_of_the_experiment():
    s = crystal("fcc")
    numbers = s.numbers.copy()
    numbers[::2] = 30
    assert classify(Structure(numbers, s.frac, s.cell)).phase is None


def test_a_random_gas_is_disordered():
    rng = np.random.default_rng(0)
    gas = Structure(np.full(80, 29), rng.random((80, 3)), np.eye(3) * 10.0)
    result = classify(gas)
    assert result.phase is None and result.ordered_fraction == 0.0 and not result.perfect
    assert (lattice_labels(gas) == "other").mean() > 0.9


def test_empty_and_single_atom_structures_are_disordered():
    assert classify(Structure(np.zeros(0, dtype=int), np.zeros((0, 3)), np.eye(3) * 5)).phase is None
    assert classify(Structure(np.array([29]), np.zeros((1, 3)), np.eye(3) * 5)).phase is None
