"""Bulk crystals of the two grains of a boundary (training data of a boundary-specific voxel model), CLI."""

from __future__ import annotations

import numpy as np
import pytest
from ase.io import read

from atomdiff.cli.main import run
from atomdiff.data.generate.grains import grain_structures
from atomdiff.physics.ordering import classify
from atomdiff.structure.grain_boundary import build_bicrystal
from atomdiff.structure.structure import Structure

W_TWIST = build_bicrystal("W", "bcc", 3.0, 5, (1, 0, 0), "twist", expand_times=2)


def test_both_grains_alternate_in_the_boundary_cell_as_perfect_noisy_bcc():
    bicrystal = build_bicrystal("W", "bcc", 3.0, 5, (1, 0, 0), "twist", expand_times=2, in_plane=(2, 1))
    structures = grain_structures(bicrystal, 6, seed=3)
    cell = bicrystal.structure.cell
    assert [s.info["grain"] for s in structures] == [0, 1, 0, 1, 0, 1]
    assert [s.info["sigma_thermal"] for s in structures] == [0.02, 0.02, 0.05, 0.05, 0.08, 0.08]
    for s in structures:
        assert np.allclose(s.cell.array, cell)
        assert len(s) == pytest.approx(s.get_volume() / (3.0**3 / 2), abs=1e-6)
        assert classify(Structure.from_ase(s)).perfect and classify(Structure.from_ase(s)).phase == "bcc"

    # the two grains are rotated against each other: the in-plane projections of their bonds differ
    def bond_directions(atoms):
        from ase.neighborlist import neighbor_list

        vectors = neighbor_list("D", atoms, 2.7)
        return np.unique(np.round(np.degrees(np.arctan2(vectors[:, 1], vectors[:, 0])) / 15) * 15)

    grain0, grain1 = grain_structures(W_TWIST, 2, seed=0, sigmas=(0.0,))
    assert not np.array_equal(bond_directions(grain0), bond_directions(grain1))


def test_same_seed_same_structures_and_independent_of_number():
    a = grain_structures(W_TWIST, 4, seed=5)
    b = grain_structures(W_TWIST, 2, seed=5)
    c = grain_structures(W_TWIST, 2, seed=6)
    assert np.array_equal(a[1].positions, b[1].positions)
    assert not np.allclose(b[1].positions, c[1].positions)


def test_cli_writes_the_data_and_rejects_bad_repeats(tmp_path, capsys):
    out = tmp_path / "grains.extxyz"
    assert run(["data", "grains", "-o", str(out), "-n", "3", "--in-plane", "1,2", "--seed", "1"]) == 0
    frames = read(out, index=":")
    assert len(frames) == 3 and frames[2].info["grain"] == 0
    assert run(["data", "grains", "-o", str(tmp_path / "x.extxyz"), "--in-plane", "3"]) == 2
    assert "--in-plane" in capsys.readouterr().err
    assert not (tmp_path / "x.extxyz").exists()
