"""Cation orderings on the sphalerite and wurtzite frameworks (atomdiff.data.generate.tetrahedral)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atomdiff.cli.main import run
from atomdiff.data.generate import CrystalDataGenerator
from atomdiff.data.generate.tetrahedral import (
    PARENTS,
    distinct_orderings,
    site_permutations,
    split_composition,
    tetrahedral_structures,
)
from atomdiff.errors import InputError
from atomdiff.physics.descriptors import min_distance
from atomdiff.structure import read_structures


def _space_groups(structures) -> set[str]:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return {SpacegroupAnalyzer(s.to_pymatgen(), symprec=0.01).get_space_group_symbol() for _, s in structures}


def test_parents_are_ideal_tetrahedral_frameworks():
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
    for parent in PARENTS:
        # every cation has exactly four anions at the bond length (1 Å), counting periodic images, and no atom
        # is closer to another than that
        d = parent.anions[None, :, None] + shifts[None, None] - parent.cations[:, None, None]
        dist = np.linalg.norm(d @ parent.cell, axis=-1).reshape(len(parent.cations), -1)
        assert np.all(np.sum(np.abs(dist - 1.0) < 1e-9, axis=1) == 4), parent.name
        assert dist.min() == pytest.approx(1.0)
    assert len(site_permutations(PARENTS[0])) == 24  # the 4 fcc sites: every permutation (S4)


def test_known_orderings_are_found_once():
    sphalerite_2 = (PARENTS[3],)
    czts = tetrahedral_structures("Cu2ZnSnS4", parents=sphalerite_2)
    groups = _space_groups(czts)
    assert {"I-4", "I-42m", "P-42m"} <= groups  # kesterite, stannite, PMCA
    assert all(s.formula in ("Cu2S4SnZn", "Cu4S8Sn2Zn2") and min_distance(s) > 2.0 for _, s in czts)
    kesterite = [s for _, s in czts if _space_groups([("", s)]) == {"I-4"}]
    assert len(kesterite) == 1 and len(kesterite[0]) == 8  # stored as its primitive (body-centred) cell
    # the supercell's own symmetry leaves a few equivalent orderings; the matcher removes them: none is left twice
    assert len(czts) <= len(distinct_orderings(PARENTS[3], {29: 2, 30: 1, 50: 1})) < 420
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher(ltol=0.05, stol=0.05, angle_tol=1, scale=False)
    pms = [s.to_pymatgen() for _, s in czts]
    assert not any(matcher.fit(a, b) for i, a in enumerate(pms) for b in pms[i + 1 :])
    cis = tetrahedral_structures("CuInSe2", max_atoms=16, parents=(PARENTS[0], PARENTS[3]))
    assert {"I-42d", "P-4m2"} <= _space_groups(cis)  # chalcopyrite and CuAu-like
    binary = tetrahedral_structures("ZnS")
    assert _space_groups(binary) == {"F-43m", "P6_3mc"}  # sphalerite and wurtzite, each once


def test_compositions_that_are_not_tetrahedral_are_refused():
    assert split_composition("Cu2ZnSnSe4") == ({29: 2, 30: 1, 50: 1}, {34: 4})
    for formula in ("SnS2", "Sb2Se3", "Cu2S"):
        with pytest.raises(InputError, match="tetrahedral"):
            split_composition(formula)
    with pytest.raises(InputError, match="mixed anions"):
        split_composition("Cu2ZnSnS2Se2")


def test_generator_screens_relaxes_and_resumes(tmp_path: Path):
    args = dict(per_composition=1, max_atoms=8, relax_steps=2, seed=0, source="tetrahedral")
    gen = CrystalDataGenerator(tmp_path, ["ZnS", "SnS2"], **args)
    assert gen.compositions == ["ZnS"]  # SnS2 is not tetrahedral
    assert gen.run() == 1
    plan = (tmp_path / "plan.json").read_text()
    again = CrystalDataGenerator(tmp_path, ["ZnS"], **args)
    assert again.run() == 0 and (tmp_path / "plan.json").read_text() == plan
    kept, relaxed = again.finish()
    assert (kept, relaxed) == (1, 1)
    (s,) = read_structures(tmp_path / "train.csv")
    assert s.formula in ("SZn", "S2Zn2") and min_distance(s) > 2.0  # primitive cell, relaxed from the guess
    with pytest.raises(InputError, match="other settings"):
        CrystalDataGenerator(tmp_path, ["ZnS"], **{**args, "source": "pyxtal"}).run()


def test_cli_source_option(tmp_path: Path, capsys):
    out = tmp_path / "t"
    argv = ["data", "crystals", "-o", str(out), "--formula", "CdTe", "--formula", "Sb2Se3", "--source", "tetrahedral"]
    assert run([*argv, "--per-composition", "1", "--max-atoms", "4", "--relax-steps", "0"]) == 0
    assert "skipped: Sb2Se3" in capsys.readouterr().out
    assert (
        run(
            [
                "data",
                "crystals",
                "-o",
                str(tmp_path / "s"),
                "--systems",
                "Cd-Te,Sb-Se",
                "--source",
                "tetrahedral",
                "--per-composition",
                "1",
                "--max-atoms",
                "4",
                "--relax-steps",
                "0",
            ]
        )
        == 0
    )
    assert "skipped: Sb2Se3" in capsys.readouterr().out
    assert len(read_structures(out / "train.csv")) == 1
    assert run(["data", "crystals", "-o", str(tmp_path / "u"), "--formula", "SnS2", "--source", "tetrahedral"]) == 2
