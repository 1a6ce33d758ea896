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
