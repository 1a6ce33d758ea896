"""``atomdiff data xanes``: a data set that ``read_spectrum_dataset`` reads, resuming, failures, settings checks.

FEFF is replaced by a stand-in runner except in the last test, which runs FEFF10 at tiny settings.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ase.build import bulk
from ase.lattice.hexagonal import Graphite

import atomdiff.physics.xanes.feff as feff_module
from atomdiff.cli.main import run
from atomdiff.data.generate.xanes import XanesDataGenerator, load_inputs
from atomdiff.data.spectra import read_spectrum_dataset
from atomdiff.errors import InputError
from atomdiff.physics.xanes import FeffRunError, FeffSettings, SpectrumCache
from atomdiff.structure import write_structures
from atomdiff.structure.structure import Structure

TINY = ["--cluster-radius", "4", "--fms-radius", "3", "--scf-radius", "3"]
TINY_SETTINGS = FeffSettings("C", cluster_radius=4.0, fms_radius=3.0, scf_radius=3.0)


class FakeFeff:
    """Counts runs; an edge whose height depends on the cluster, on 270–330 eV (to 310 eV for titles with
    ``short``); fails for titles naming a site in ``fail`` (``"<name> site <index>"``)."""

    def __init__(self, fail: tuple[str, ...] = (), stop_after: int | None = None):
        self.calls = 0
        self.fail = fail
        self.stop_after = stop_after

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        title = text.splitlines()[0]
        if any(f" {f} " in title for f in self.fail):
            raise FeffRunError("FEFF failed: stage fms exited with status 2")
        n_atoms = len(text.splitlines()) - text.splitlines().index("ATOMS") - 3
        energy = np.linspace(270.0, 310.0 if "short" in title else 330.0, 61)
        return energy, (1.0 + 0.01 * n_atoms) / (1.0 + np.exp(-(energy - 285.0)))


def graphite() -> Structure:
    return Structure.from_ase(Graphite("C", latticeconstant={"a": 2.464, "c": 6.711}))


def diamond() -> Structure:
    return Structure.from_ase(bulk("C", "diamond", a=3.567))


def silicon_carbide() -> Structure:
    return Structure.from_ase(bulk("SiC", "zincblende", a=4.36).repeat((1, 1, 2)))


@pytest.fixture
def inputs(tmp_path):
    """Graphite (4 C, 2 kinds of site), diamond (2 C, 1 kind) and SiC (2 C among 4 atoms), in three formats."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = [folder / "graphite.cif", folder / "diamond.vasp", folder / "sic.extxyz"]
    for structure, path in zip((graphite(), diamond(), silicon_carbide()), paths, strict=True):
        write_structures(structure, path)
    return paths


@pytest.fixture
def fake(monkeypatch, tmp_path):
    runner = FakeFeff()
    monkeypatch.setattr(feff_module, "run_feff", runner)
    monkeypatch.setenv("ATOMDIFF_XANES_CACHE", str(tmp_path / "default-cache"))
    return runner


def command(paths, out, cache, *extra) -> list[str]:
    return ["data", "xanes", *map(str, paths), "-o", str(out), "--absorber", "C", "--cache", str(cache), *TINY, *extra]


def test_writes_a_data_set_that_the_training_reader_reads(inputs, fake, tmp_path):
    out = tmp_path / "ds"
    assert run(command(inputs, out, tmp_path / "cache")) == 0
    items = {item.name: item for item in read_spectrum_dataset(out, "train", absorber=6)}
    assert sorted(items) == ["diamond", "graphite", "sic"]
    assert {name: item.spectra.shape[0] for name, item in items.items()} == {"diamond": 2, "graphite": 4, "sic": 2}
    sic = items["sic"]
    assert sic.structure.numbers[sic.absorbers].tolist() == [6, 6] and len(sic.structure) == 4
    grid = json.loads((out / "settings.json").read_text())["grid"]
    # automatic grid: the stand-in spectra cover 270–330 eV; the top keeps a 10 eV margin
    assert (grid["emin"], grid["emax"], grid["step"]) == (270.0, 320.0, 0.5)
    header = next(csv.reader(open(out / "xanes" / "train" / "graphite.csv")))
    np.testing.assert_allclose([float(v) for v in header], np.arange(270.0, 320.0 + 1e-9, 0.5))
    assert all(item.spectra.shape[1] == 101 for item in items.values())
    # sites of one kind share a spectrum; the two kinds of graphite site differ (other cluster sizes here)
    g = items["graphite"].spectra
    assert fake.calls == 2 + 1 + 1 and not np.allclose(g[0], g[1]) and np.allclose(g[0], g[3])
    assert not (out / "failed.csv").exists()


def test_resume_recomputes_nothing_and_a_lost_file_comes_from_the_cache(inputs, fake, tmp_path):
    out, cache = tmp_path / "ds", tmp_path / "cache"
    assert run(command(inputs, out, cache)) == 0
    calls, before = fake.calls, (out / "xanes" / "train" / "sic.csv").read_text()
    assert run(command(inputs, out, cache)) == 0 and fake.calls == calls
    (out / "xanes" / "train" / "sic.csv").unlink()
    (out / "poscar" / "train" / "diamond.vasp").unlink()  # interrupted between its CSV and its POSCAR
    assert run(command(inputs, out, cache)) == 0 and fake.calls == calls
    assert (out / "xanes" / "train" / "sic.csv").read_text() == before
    assert len(read_spectrum_dataset(out, "train", absorber=6)) == 3


def test_an_interrupted_run_resumes_without_running_finished_sites_again(tmp_path):
    """Every carbon of a small random cell has its own environment; stop after 3 runs, then finish."""
    rng = np.random.default_rng(0)
    cell = Structure(np.full(5, 6), rng.uniform(0, 1, (5, 3)), np.eye(3) * 4.0)
    items = load_inputs([_write(cell, tmp_path / "cell.extxyz")])
    out, cache = tmp_path / "ds", SpectrumCache(tmp_path / "cache")
    stopping = FakeFeff(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        XanesDataGenerator(out, TINY_SETTINGS, cache=cache, runner=stopping).run(items)
    assert stopping.calls == 3 and not (out / "xanes" / "train" / "cell.csv").exists()
    rest = FakeFeff()
    summary = XanesDataGenerator(out, TINY_SETTINGS, cache=cache, runner=rest).run(items)
    assert rest.calls == 2 and summary.computed == 2 and summary.cached == 3 and summary.written == 1
    assert read_spectrum_dataset(out, "train", absorber=6)[0].spectra.shape == (5, 101)


def random_carbon(n: int, seed: int) -> Structure:
    rng = np.random.default_rng(seed)
    return Structure(np.full(n, 6), rng.uniform(0, 1, (n, 3)), np.eye(3) * 5.0)


def test_some_sites_per_structure_are_drawn_reproducibly_and_read_back_by_index(tmp_path):
    """``--sites-per-structure 3`` on two 8-atom random cells: 3 FEFF runs each, a ``site`` column that the
    reader maps to the right atoms; resuming, or adding a structure, draws the same sites; a structure with
    fewer sites is labelled whole; another k or seed on the same folder is refused."""
    paths = [_write(random_carbon(8, seed), tmp_path / f"cell{seed}.extxyz") for seed in (0, 1)]
    small = _write(random_carbon(2, 2), tmp_path / "small.extxyz")
    out, cache = tmp_path / "ds", SpectrumCache(tmp_path / "cache")
    runner = FakeFeff()
    summary = XanesDataGenerator(out, TINY_SETTINGS, cache=cache, runner=runner, sites_per_structure=3, seed=4).run(
        load_inputs(paths)
    )
    assert summary.written == 2 and runner.calls == 6
    items = read_spectrum_dataset(out, "train", absorber=6)
    full = XanesDataGenerator(tmp_path / "full", TINY_SETTINGS, cache=cache, runner=runner).run(load_inputs(paths))
    assert full.computed == 16 - 6  # the drawn sites came from the cache
    whole = {item.name: item for item in read_spectrum_dataset(tmp_path / "full", "train", absorber=6)}
    for item in items:
        assert len(item.absorbers) == 3 and list(item.absorbers) == sorted(set(item.absorbers))
        # each row is the spectrum of the atom its site column names
        np.testing.assert_allclose(item.spectra, whole[item.name].spectra[item.absorbers], rtol=1e-6)
    assert list(items[0].absorbers) != list(items[1].absorbers)
    header = next(csv.reader(open(out / "xanes" / "train" / "cell0.csv")))
    assert header[0] == "site" and float(header[1]) == 270.0
    before = (out / "xanes" / "train" / "cell1.csv").read_text()
    (out / "xanes" / "train" / "cell1.csv").unlink()
    again = XanesDataGenerator(out, TINY_SETTINGS, cache=None, runner=FakeFeff(), sites_per_structure=3, seed=4)
    assert again.run(load_inputs([*paths, small])).written == 2
    assert (out / "xanes" / "train" / "cell1.csv").read_text() == before  # same draw without the cache
    assert read_spectrum_dataset(out, "train", absorber=6)[2].absorbers.tolist() == [0, 1]
    for k, seed in ((2, 4), (3, 5)):
        with pytest.raises(InputError, match="split train labels 3 sites per structure drawn with seed 4"):
            XanesDataGenerator(out, TINY_SETTINGS, runner=FakeFeff(), sites_per_structure=k, seed=seed).run(
                load_inputs(paths)
            )
    with pytest.raises(InputError, match="labels 3 sites per structure"):
        XanesDataGenerator(out, TINY_SETTINGS, runner=FakeFeff()).run(load_inputs(paths))
    # another split may choose otherwise: here every site
    test = XanesDataGenerator(out, TINY_SETTINGS, "test", cache=cache, runner=FakeFeff()).run(load_inputs(paths[:1]))
    assert test.written == 1 and read_spectrum_dataset(out, "test", absorber=6)[0].absorbers.tolist() == list(range(8))
    assert json.loads((out / "settings.json").read_text())["sites"] == {
        "train": {"per_structure": 3, "seed": 4},
        "test": None,
    }
    with pytest.raises(InputError, match="at least 1"):
        XanesDataGenerator(out, TINY_SETTINGS, sites_per_structure=0)


def _write(structure: Structure, path):
    write_structures(structure, path)
    return path


def test_a_failed_site_is_reported_and_its_structure_left_out(inputs, monkeypatch, tmp_path, capsys):
    failing = FakeFeff(fail=("graphite site 1",))
    monkeypatch.setattr(feff_module, "run_feff", failing)
    out, cache = tmp_path / "ds", tmp_path / "cache"
    assert run(command(inputs, out, cache)) == 0
    assert "1 structure(s) left out (2 failed sites)" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "failed.csv")))
    # sites 1 and 2 of graphite share an environment: both are reported
    assert [(r["split"], r["name"], r["site"]) for r in rows] == [("train", "graphite", s) for s in ("1", "2")]
    assert "status 2" in rows[0]["reason"] and rows[0]["source"].endswith("graphite.cif")
    assert not (out / "poscar" / "train" / "graphite.vasp").exists()
    assert not (out / "xanes" / "train" / "graphite.csv").exists()
    assert sorted(item.name for item in read_spectrum_dataset(out, "train", absorber=6)) == ["diamond", "sic"]
    calls = failing.calls
    assert run(command(inputs, out, cache)) == 0 and failing.calls == calls  # listed as failed: skipped
    monkeypatch.setattr(feff_module, "run_feff", fixed := FakeFeff())
    assert run(command(inputs, out, cache, "--retry-failed")) == 0
    assert fixed.calls == 1  # only the failed environment; graphite's other site is in the cache
    assert list(csv.DictReader(open(out / "failed.csv"))) == []
    assert len(read_spectrum_dataset(out, "train", absorber=6)) == 3


def test_a_spectrum_that_ends_before_the_grid_is_a_failed_site(tmp_path):
    items = load_inputs([_write(diamond(), tmp_path / "diamond.vasp"), _write(graphite(), tmp_path / "short.cif")])
    out = tmp_path / "ds"
    summary = XanesDataGenerator(out, TINY_SETTINGS, runner=FakeFeff()).run(items)
    assert (summary.written, summary.failed, summary.failed_sites) == (1, 1, 4)
    rows = list(csv.DictReader(open(out / "failed.csv")))
    assert {r["name"] for r in rows} == {"short"} and "ends at 310.00 eV" in rows[0]["reason"]


def test_explicit_grid_other_splits_and_parallel_workers(inputs, fake, tmp_path):
    out, cache = tmp_path / "ds", tmp_path / "cache"
    assert run(command(inputs[:1], out, cache, "--emin", "280", "--emax", "300", "--step", "0.25")) == 0
    # another split, the folder's grid kept without repeating it; two processes
    assert run(command(inputs[1:], out, cache, "--split", "test", "--workers", "2")) == 0
    train, test = read_spectrum_dataset(out, "train", 6), read_spectrum_dataset(out, "test", 6)
    assert [i.name for i in train] == ["graphite"] and [i.name for i in test] == ["diamond", "sic"]
    assert {i.spectra.shape[1] for i in train + test} == {81}
    np.testing.assert_allclose(test[0].spectra[0], test[0].spectra[1])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cluster-radius", "4.5"], "other FEFF settings (cluster_radius: 4.0 → 4.5)"),
        (["--corehole", "FSR"], "corehole: RPA → FSR"),
        (["--step", "0.25"], "step = 0.5 eV, not 0.25 eV"),
        (["--emin", "271"], "emin = 270.0 eV, not 271.0 eV"),
    ],
)
def test_other_settings_on_resume_are_refused(inputs, fake, tmp_path, capsys, extra, message):
    out, cache = tmp_path / "ds", tmp_path / "cache"
    assert run(command(inputs[:1], out, cache)) == 0
    calls = fake.calls
    args = command(inputs, out, cache)
    args = args[: args.index("--cluster-radius")] + ["--fms-radius", "3", "--scf-radius", "3"]
    if "--cluster-radius" not in extra:
        args += ["--cluster-radius", "4"]
    assert run([*args, *extra]) == 2
    assert message in capsys.readouterr().err and fake.calls == calls
    with pytest.raises(InputError, match="other FEFF settings"):
        XanesDataGenerator(out, FeffSettings("C", cluster_radius=5.0, fms_radius=3.0, scf_radius=3.0)).run(
            load_inputs(inputs[:1])
        )


def test_bad_input_exits_2_before_any_feff_run(inputs, fake, tmp_path, capsys):
    out, cache = tmp_path / "ds", tmp_path / "cache"
    assert run(["data", "xanes", str(inputs[2]), "-o", str(out), "--absorber", "Si", "--cache", str(cache)]) == 0
    assert run(command(inputs, tmp_path / "n", cache, "--absorber", "N")) == 2
    assert "no N atom to absorb at in" in capsys.readouterr().err
    twin = tmp_path / "other" / "diamond.cif"
    twin.parent.mkdir()
    write_structures(diamond(), twin)
    assert run(command([*inputs, twin], tmp_path / "twins", cache)) == 2
    assert "two structures would be named 'diamond'" in capsys.readouterr().err
    assert run(command(inputs, tmp_path / "e", cache, "--emin", "300", "--emax", "290")) == 2
    assert run(command(inputs, tmp_path / "s", cache, "--split", "../x")) == 2
    assert fake.calls == 1  # the Si run only


def test_help(capsys):
    assert run(["data", "xanes", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--absorber" in out and "--split" in out and "--emin" in out and "--retry-failed" in out
    assert "--sites-per-structure" in out and "--seed" in out


def test_real_feff_round_trip_into_the_training_reader(tmp_path):
    pytest.importorskip("feff10")
    path = _write(diamond(), tmp_path / "diamond.vasp")
    out = tmp_path / "ds"
    settings = FeffSettings("C", cluster_radius=3.0, fms_radius=3.0, scf_radius=3.0, corehole="FSR")
    summary = XanesDataGenerator(out, settings, cache=SpectrumCache(tmp_path / "cache")).run(load_inputs([path]))
    assert (summary.written, summary.computed, summary.cached) == (1, 1, 1)
    (item,) = read_spectrum_dataset(out, "train", absorber=6)
    assert item.spectra.shape[0] == 2 and np.allclose(item.spectra[0], item.spectra[1])
    grid = json.loads((out / "settings.json").read_text())["grid"]
    energies = grid["emin"] + 0.5 * np.arange(item.spectra.shape[1])
    assert 260 < grid["emin"] < 290 and energies[-1] == pytest.approx(grid["emax"])
    # the K edge rises within the grid: low before, near the edge-jump normalisation above
    spectrum = item.spectra[0]
    assert spectrum[0] < 0.2 and spectrum[-20:].mean() > 0.5
