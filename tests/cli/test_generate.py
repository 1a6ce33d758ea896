"""``atomdiff generate``: files written, seeds, constraints honoured, bad constraints refused (exit 2)."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from atomdiff.cli.main import run
from atomdiff.diffusion.crystal import CrystalDiffusion, DataStatistics
from atomdiff.errors import InputError
from atomdiff.models.crystal import CrystalNetConfig
from atomdiff.structure import Structure, read_structures
from atomdiff.weights import load_crystal_model

CA, TI, O, SR, NA, CL, MG = 20, 22, 8, 38, 11, 17, 12


def _perovskite(a: int, b: int, x: int, lattice: float) -> Structure:
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure([a, b, x, x, x], frac, np.eye(3) * lattice)


def _rocksalt(a: int, b: int, lattice: float) -> Structure:
    fcc = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return Structure([a] * 4 + [b] * 4, np.vstack([fcc, fcc + [0.5, 0, 0]]), np.eye(3) * lattice)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained tiny model that knows Ca, Ti, Sr, O, Na, Cl, Mg and cells of 5 and 8 atoms."""
    torch.manual_seed(0)
    structures = [_perovskite(CA, TI, O, 3.9), _perovskite(SR, TI, O, 3.95), _rocksalt(NA, CL, 5.64)]
    structures.append(_rocksalt(MG, O, 4.21))
    model = CrystalDiffusion(CrystalNetConfig(hidden=32, layers=1), DataStatistics.from_structures(structures))
    folder = tmp_path_factory.mktemp("tiny_model")
    model.save(folder)
    return folder


def _generate(model_dir: Path, out: Path, *extra: str) -> int:
    return run(["generate", "--model", str(model_dir), "-o", str(out), "--steps", "4", *extra])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_help():
    assert run(["generate", "--help"]) == 0
    assert run(["evaluate", "csp", "--help"]) == 0
    assert run(["evaluate", "denovo", "--help"]) == 0


def test_writes_cifs_extxyz_and_summary(model_dir, tmp_path):
    out = tmp_path / "out"
    assert _generate(model_dir, out, "-n", "3", "--formula", "CaTiO3") == 0
    cifs = sorted(out.glob("*.cif"))
    assert [p.name for p in cifs] == ["000_CaO3Ti.cif", "001_CaO3Ti.cif", "002_CaO3Ti.cif"]
    together = read_structures(out / "samples.extxyz")
    assert len(together) == 3
    for cif, s in zip(cifs, together, strict=True):
        single = read_structures(cif)[0]
        assert sorted(single.numbers) == sorted(s.numbers)
        assert np.allclose(single.lattice_parameters, s.lattice_parameters, atol=1e-4)
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["index", "formula", "n_atoms", "density", "min_distance", "valid"]
    assert [r["index"] for r in rows] == ["0", "1", "2"]
    assert all(r["formula"] == "CaO3Ti" and r["n_atoms"] == "5" and float(r["density"]) > 0 for r in rows)
    assert {r["valid"] for r in rows} <= {"True", "False"}


def test_same_seed_same_structures(model_dir, tmp_path):
    args = ("-n", "4", "--batch-size", "3", "--seed", "7", "--atoms", "5-8")
    assert _generate(model_dir, tmp_path / "a", *args) == 0
    assert _generate(model_dir, tmp_path / "b", *args) == 0
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _generate(model_dir, tmp_path / "c", "-n", "4", "--batch-size", "3", "--seed", "8", "--atoms", "5-8") == 0
    a, c = read_structures(tmp_path / "a" / "samples.extxyz"), read_structures(tmp_path / "c" / "samples.extxyz")
    assert any(len(x) != len(y) or not np.allclose(x.frac, y.frac) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(
    "args, check",
    [
        (
            ["--formula", "CaTiO3", "--atoms", "5-10"],
            lambda c, n: n % 5 == 0 and c == {CA: n // 5, TI: n // 5, O: 3 * n // 5},
        ),
        (
            ["--elements", "Ti", "--exclude", "O,Mg", "--counts", "Ca:1-2,Cl:0", "--atoms", "3-6"],
            lambda c, n: c[TI] >= 1 and c[O] == 0 and c[MG] == 0 and 1 <= c[CA] <= 2 and c[CL] == 0 and 3 <= n <= 6,
        ),
        (["--elements", "Na,Cl", "--counts", "Na:2-3"], lambda c, n: c[CL] >= 1 and 2 <= c[NA] <= 3),
    ],
    ids=["formula", "elements-exclude-counts", "counts"],
)
def test_constraints_are_honoured(model_dir, tmp_path, args, check):
    out = tmp_path / "out"
    assert _generate(model_dir, out, "-n", "6", *args) == 0
    structures = read_structures(out / "samples.extxyz")
    assert len(structures) == 6
    for s in structures:
        assert check(Counter(int(z) for z in s.numbers), len(s)), s.formula


@pytest.mark.parametrize(
    "args, message",
    [
        (["--elements", "Ca", "--exclude", "Ti,Ca"], "both required and excluded"),
        (["--elements", "Ca,Xx"], "unknown element"),
        (["--exclude", "Qq"], "unknown element"),
        (["--counts", "O:9", "--atoms", "2-5"], "need at least 9 atoms"),
        (["--formula", "UO2"], "never seen"),
        (["--formula", "CaTiO3", "--atoms", "6-9"], "formula units"),
        (["--atoms", "5-2"], "empty"),
        (["--model", "no-such-model"], "shipped"),
        (["--device", "quantum"], "--device must be"),
    ],
)
def test_bad_constraints_exit_2_and_write_nothing(model_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert _generate(model_dir, out, "-n", "2", *args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_earlier_run_is_kept_unless_overwrite(model_dir, tmp_path):
    out = tmp_path / "out"
    assert _generate(model_dir, out, "-n", "3") == 0
    assert _generate(model_dir, out, "-n", "2") == 2
    assert len(list(out.glob("*.cif"))) == 3
    assert _generate(model_dir, out, "-n", "2", "--overwrite") == 0
    assert len(list(out.glob("*.cif"))) == 2


def test_load_crystal_model_by_folder_and_unknown_name(model_dir):
    model = load_crystal_model(model_dir)
    assert isinstance(model, CrystalDiffusion) and not model.training
    with pytest.raises(InputError, match="shipped"):
        load_crystal_model("no-such-model")


# --- atomdiff solve: bad input is refused with exit code 2 --------------------------------------------
@pytest.fixture
def pattern_file(tmp_path: Path) -> Path:
    from atomdiff.data.patterns import write_pattern
    from atomdiff.physics.diffraction import PowderDiffractionModel, two_theta_grid
    from atomdiff.structure.batch import StructureBatch

    x = two_theta_grid(15, 80, 0.05)
    y = PowderDiffractionModel("xray", "CuKa1", x)(StructureBatch.from_structures([_perovskite(CA, TI, O, 3.9)])).y[0]
    path = tmp_path / "p.xy"
    write_pattern(path, x.numpy(), (y / y.max() * 1e4 + 50).numpy())
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--elements", "Ca,Xx"], "Xx"),
        (["--elements", "Ca,Ti", "--exclude", "Ti"], "both required and excluded"),
        (["--formula", "CaTiO3", "--exclude", "O"], "excluded"),
        (["--formula", "CaTiO3", "--elements", "Sr"], "lacks required"),
        ([], "--elements and/or --formula"),
        (["--formula", "CaTiO3", "--top", "30"], "--top"),
        (["--formula", "CaTiO3", "--texture", "0,0,0"], "--texture"),
        (["--formula", "CaTiO3", "--texture", "1,1"], "--texture"),
    ],
)
def test_solve_refuses_contradicting_or_missing_chemistry(pattern_file, tmp_path, capsys, args, message):
    code = run(["solve", str(pattern_file), "-o", str(tmp_path / "out"), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_solve_refuses_a_pattern_with_too_few_points(tmp_path, capsys, model_dir):
    from atomdiff.data.patterns import write_pattern

    path = tmp_path / "short.xy"
    write_pattern(path, np.linspace(20, 30, 20), np.ones(20))
    code = run(["solve", str(path), "-o", str(tmp_path / "out"), "--formula", "CaTiO3", "-m", str(model_dir)])
    assert code == 2
    assert "short.xy" in capsys.readouterr().err


def test_solve_with_elements_places_only_the_listed_elements(pattern_file, model_dir, tmp_path):
    out = tmp_path / "out"
    args = ["solve", str(pattern_file), "-o", str(out), "-m", str(model_dir), "--elements", "Ca,Ti,O"]
    fast = ["--candidates", "3", "--top", "1", "--refine-keep", "1", "--steps", "4", "--atoms", "5", "--cell-pass", "0"]
    assert run([*args, *fast]) == 0
    with open(out / "candidates.csv") as f:
        formulas = [row["formula"] for row in csv.DictReader(f)]
    assert len(formulas) == 3
    for formula in formulas:
        assert set(re.findall(r"[A-Z][a-z]?", formula)) == {"Ca", "Ti", "O"}
