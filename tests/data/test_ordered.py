"""The ordered-phase data set of the voxel experiment: phases, shared box, counts, seeds, CLI."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from ase.io import read
from ase.neighborlist import neighbor_list

from atomdiff.cli.main import run
from atomdiff.data.generate.ordered import BOX, PHASES, ideal_structure, ordered_structures, variants
from atomdiff.errors import InputError

COORDINATION = {"sc": 6, "bcc": 8, "fcc": 12, "hcp": 12, "diamond": 4, "rock-salt": 6, "CsCl": 8, "zinc-blende": 4}


def test_phases_listed():
    assert set(PHASES) == set(COORDINATION)


@pytest.mark.parametrize("phase", PHASES)
def test_ideal_variants_fill_the_box_with_the_right_coordination(phase):
    for v in variants(phase):
        atoms = ideal_structure(v)
        assert np.allclose(atoms.cell.array, np.eye(3) * BOX)
        _, _, d = neighbor_list("ijd", atoms, 4.5)
        first = d < d.min() * 1.05  # hcp is strained by up to ~4 %
        assert first.sum() == COORDINATION[phase] * len(atoms), v
        if phase in ("rock-salt", "CsCl", "zinc-blende"):
            assert Counter(atoms.get_chemical_symbols()) == {"Cu": len(atoms) // 2, "Zn": len(atoms) // 2}
        else:
            assert set(atoms.get_chemical_symbols()) == {"Cu"}


def test_every_phase_present_box_shared_counts_right():
    structures = ordered_structures(4, seed=1)
    assert Counter(s.info["phase"] for s in structures) == {p: 4 for p in PHASES}
    for s in structures:
        assert np.allclose(s.cell.array, np.eye(3) * BOX)
        frac = s.get_scaled_positions(wrap=False)
        assert np.all((frac >= 0) & (frac < 1))
        assert s.info["sigma_thermal"] > 0


def test_reproducible_by_seed_and_independent_of_count():
    a, b, c = ordered_structures(3, seed=5), ordered_structures(3, seed=5), ordered_structures(3, seed=6)
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b, strict=True))
    assert not any(np.allclose(x.positions, y.positions) for x, y in zip(a, c, strict=True))
    first = ordered_structures(1, seed=5, phases=["fcc"])[0]
    assert np.array_equal(first.positions, next(s for s in a if s.info["phase"] == "fcc").positions)


def test_bad_arguments():
    with pytest.raises(InputError, match="unknown phase"):
        ordered_structures(1, phases=["bct"])
    with pytest.raises(InputError, match="species"):
        ordered_structures(1, species=("Cu", "Cu"))


def test_cli_writes_extxyz(tmp_path):
    out = tmp_path / "ordered.extxyz"
    assert run(["data", "ordered", "-o", str(out), "--per-phase", "2", "--seed", "3"]) == 0
    images = read(out, index=":")
    assert Counter(s.info["phase"] for s in images) == {p: 2 for p in PHASES}
    assert run(["data", "ordered", "-o", str(out), "--phases", "fcc,bct"]) == 2
