"""``atomdiff simulate xanes``: the CSV it writes, the cache, site choice, and clean failures (exit 2).

FEFF is replaced by a stand-in runner here; tests/physics/test_feff.py runs the real one.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.lattice.hexagonal import Graphite

import atomdiff.physics.xanes.feff as feff_module
from atomdiff.cli.main import run
from atomdiff.physics.xanes import FeffRunError, read_xanes_csv
from atomdiff.structure import write_structures
from atomdiff.structure.structure import Structure

TINY = ["--cluster-radius", "4", "--fms-radius", "3", "--scf-radius", "3"]


class FakeFeff:
    """Counts runs and returns an edge whose height depends on the cluster; fails for titles in ``fail``."""

    def __init__(self, fail: tuple[int, ...] = ()):
        self.calls = 0
        self.fail = fail

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if any(f" site {s} " in text.splitlines()[0] for s in self.fail):
            raise FeffRunError("FEFF failed: stage fms exited with status 2")
        n_atoms = len(text.splitlines()) - text.splitlines().index("ATOMS") - 3
        energy = np.linspace(270.0, 330.0, 61)
        return energy, (1.0 + 0.01 * n_atoms) / (1.0 + np.exp(-(energy - 285.0)))


@pytest.fixture
def graphite_cif(tmp_path):
    path = tmp_path / "graphite.cif"
    write_structures(Structure.from_ase(Graphite("C", latticeconstant={"a": 2.464, "c": 6.711})), path)
    return path


@pytest.fixture
def fake(monkeypatch, tmp_path):
    runner = FakeFeff()
    monkeypatch.setattr(feff_module, "run_feff", runner)
    monkeypatch.setenv("ATOMDIFF_XANES_CACHE", str(tmp_path / "default-cache"))
    return runner


def test_writes_energy_sites_and_mean_and_reruns_from_the_cache(graphite_cif, fake, tmp_path):
    out, cache = tmp_path / "xanes.csv", tmp_path / "cache"
    args = ["simulate", "xanes", str(graphite_cif), "--absorber", "C", "-o", str(out), "--cache", str(cache), *TINY]
    assert run(args) == 0
    names, table = read_xanes_csv(out)
    assert names == ["energy_eV", "site_0", "site_1", "site_2", "site_3", "mean"]
    assert np.allclose(np.diff(table[:, 0]), 0.1, atol=1e-6)
    np.testing.assert_allclose(table[:, -1], table[:, 1:-1].mean(axis=1), rtol=1e-5)
    assert fake.calls == 2  # two kinds of site among four
    assert run(args) == 0 and fake.calls == 2  # everything from the cache
    assert not (tmp_path / "default-cache").exists()


def test_default_cache_folder_and_no_cache(graphite_cif, fake, tmp_path):
    out = tmp_path / "x.csv"
    assert run(["simulate", "xanes", str(graphite_cif), "--absorber", "C", "-o", str(out), *TINY]) == 0
    assert len(list((tmp_path / "default-cache").glob("*.npz"))) == 2
    assert run(["simulate", "xanes", str(graphite_cif), "--absorber", "C", "-o", str(out), "--no-cache", *TINY]) == 0
    assert fake.calls == 4


def test_sites_by_count_or_index(graphite_cif, fake, tmp_path):
    out = tmp_path / "x.csv"
    base = ["simulate", "xanes", str(graphite_cif), "--absorber", "C", "-o", str(out), "--no-cache", *TINY]
    assert run([*base, "--sites", "2", "--seed", "1"]) == 0
    assert len(read_xanes_csv(out)[0]) == 4
    assert run([*base, "--sites", "3,"]) == 0
    assert read_xanes_csv(out)[0] == ["energy_eV", "site_3", "mean"]


def test_a_failed_site_is_reported_and_left_out(graphite_cif, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(feff_module, "run_feff", FakeFeff(fail=(1,)))
    out = tmp_path / "x.csv"
    args = ["simulate", "xanes", str(graphite_cif), "--absorber", "C", "-o", str(out), "--no-cache"]
    assert run([*args, *TINY, "--sites", "0,1"]) == 0
    assert "site 1 skipped" in capsys.readouterr().out
    assert read_xanes_csv(out)[0] == ["energy_eV", "site_0", "mean"]
    assert run([*args, *TINY, "--sites", "1,"]) == 2
    assert "FEFF failed on every site" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--absorber", "N"], "no N atom"),
        (["--absorber", "C", "--edge", "Q"], "unknown edge 'Q'"),
        (["--absorber", "C", "--sites", "some"], "--sites"),
        (["--absorber", "C", "--sites", "0,7"], "not an atom"),
        (["--absorber", "C", "--fms-radius", "9"], "larger than the cluster radius"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(graphite_cif, fake, tmp_path, capsys, extra, message):
    out = tmp_path / "x.csv"
    assert run(["simulate", "xanes", str(graphite_cif), "-o", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and fake.calls == 0


def test_output_must_be_csv(graphite_cif, fake, tmp_path, capsys):
    assert run(["simulate", "xanes", str(graphite_cif), "--absorber", "C", "-o", str(tmp_path / "x.xy")]) == 2
    assert "--output must end in one of .csv" in capsys.readouterr().err


def test_help(capsys):
    assert run(["simulate", "xanes", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--absorber" in out and "--cluster-radius" in out and "--workers" in out
