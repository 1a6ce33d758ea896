"""Training-data generation: random symmetric crystals, CHGNet relaxation, resume, energy filter."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomdiff.cli.main import run
from atomdiff.data.generate import CrystalDataGenerator
from atomdiff.errors import InputError
from atomdiff.structure import read_structures


def test_generate_resume_and_filter(tmp_path: Path):
    gen = CrystalDataGenerator(tmp_path, ["CdTe"], per_composition=2, max_atoms=4, relax_steps=3, seed=1)
    plan = gen.plan()
    assert [(c.composition, c.z) for c in plan] == [("CdTe", 1), ("CdTe", 2)]
    first = gen.random_crystal(plan[1])
    assert sorted(first.numbers.tolist()) == [48, 48, 52, 52]
    assert (gen.random_crystal(plan[1]).frac == first.frac).all()  # candidate i is reproducible
    assert gen.run() == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "structures").iterdir()}
    again = CrystalDataGenerator(tmp_path, ["CdTe"], per_composition=2, max_atoms=4, relax_steps=3, seed=1)
    assert again.run() == 0  # resumed: nothing recomputed
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "structures").iterdir()}
    kept, relaxed = again.finish()
    assert relaxed == 2 and 1 <= kept <= 2
    rows = read_structures(tmp_path / "train.csv")
    assert len(rows) == kept and all(s.formula == "CdTe" for s in rows)
    assert all(isinstance(s.info["energy_per_atom"], float) for s in rows)


def test_other_settings_in_the_same_folder_are_refused(tmp_path: Path):
    CrystalDataGenerator(tmp_path, ["CdTe"], per_composition=1, max_atoms=2, relax_steps=0)._check_folder()
    with pytest.raises(InputError, match="other settings"):
        CrystalDataGenerator(tmp_path, ["CdTe"], per_composition=2, max_atoms=2, relax_steps=0).run()


def test_cli_refuses_unknown_system_and_oversized_formula(tmp_path: Path, capsys):
    assert run(["data", "crystals", "-o", str(tmp_path / "a"), "--systems", "Cu-Zn-Sn-Q"]) == 2
    assert "unknown system" in capsys.readouterr().err
    assert run(["data", "crystals", "-o", str(tmp_path / "b"), "--formula", "Cu2ZnSnS4", "--max-atoms", "4"]) == 2
    assert "more than --max-atoms" in capsys.readouterr().err


def test_space_groups_parsed_from_numbers_ranges_and_crystal_systems():
    from atomdiff.data.generate.crystals import parse_space_groups

    assert parse_space_groups("orthorhombic") == tuple(range(16, 75))
    assert parse_space_groups("62, 63,1-2") == (1, 2, 62, 63)
    assert parse_space_groups("225,Cubic") == tuple(range(195, 231))
    for bad in ("0", "231", "74-16", "ortho", "6-2-1", ",", "x"):
        with pytest.raises(InputError, match="space groups"):
            parse_space_groups(bad)


def test_random_crystals_restricted_to_the_requested_space_groups(tmp_path: Path):
    import numpy as np

    gen = CrystalDataGenerator(
        tmp_path, ["SnS"], per_composition=6, max_atoms=8, relax_steps=0, seed=3, space_groups=range(16, 75)
    )
    for cand in gen.plan():
        crystal = gen.random_crystal(cand)
        assert np.allclose(crystal.lattice_parameters[3:], 90.0, atol=1e-6)  # an orthorhombic cell every time
    gen._check_folder()
    assert "space_groups" in (tmp_path / "settings.json").read_text()
    with pytest.raises(InputError, match="other settings"):  # the same folder without the restriction
        CrystalDataGenerator(tmp_path, ["SnS"], per_composition=6, max_atoms=8, relax_steps=0, seed=3).run()
    # only the numbers of formula units the groups can hold: Pnma and Cmcm put SnS in cells of 4 and 8 units
    narrow = CrystalDataGenerator(tmp_path / "p", ["SnS"], per_composition=3, max_atoms=16, space_groups=[62, 63])
    assert [c.z for c in narrow.plan()] == [4, 8, 4]
    with pytest.raises(InputError, match="no cell of up to --max-atoms 6"):
        CrystalDataGenerator(tmp_path / "q", ["SnS"], max_atoms=6, space_groups=[62]).plan()
    with pytest.raises(InputError, match="pyxtal"):
        CrystalDataGenerator(tmp_path / "t", ["ZnS"], source="tetrahedral", space_groups=[216])
    with pytest.raises(InputError, match="1-230"):
        CrystalDataGenerator(tmp_path / "u", ["ZnS"], space_groups=[0, 216])


def test_cli_refuses_bad_space_groups(tmp_path: Path, capsys):
    args = ["data", "crystals", "-o", str(tmp_path / "a"), "--formula", "SnS", "--space-groups", "orthorombic"]
    assert run(args) == 2
    assert "crystal systems" in capsys.readouterr().err
