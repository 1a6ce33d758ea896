"""Training-data generation: random symmetric crystals, CHGNet relaxation, resume, energy filter."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from atomdiff.cli.main import run
from atomdiff.data.generate import CrystalDataGenerator
from atomdiff.errors import InputError
from atomdiff.structure import Structure, read_structures


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


def test_a_relaxation_that_collapses_the_cell_is_stopped_and_gets_no_energy():
    """Lennard-Jones with σ = 1 Å pulls a 2.7 Å fcc lattice together: the volume falls below 0.6× and the
    relaxation stops with a NaN energy; with σ at the lattice's own scale it relaxes to a finite energy."""
    from ase.calculators.lj import LennardJones

    from atomdiff.data.generate.crystals import relax_cell_and_positions

    fcc = Structure([29] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], np.eye(3) * 3.8)
    collapsed, energy = relax_cell_and_positions(fcc, LennardJones(sigma=1.0, rc=6.0), steps=300)
    assert math.isnan(energy) and collapsed.volume < 0.6 * fcc.volume
    relaxed, energy = relax_cell_and_positions(fcc, LennardJones(sigma=2.4, rc=6.0), steps=300)
    assert math.isfinite(energy) and 0.6 * fcc.volume < relaxed.volume < 2.0 * fcc.volume
