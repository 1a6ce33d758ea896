"""The solve pipeline end to end on a tiny model: files, rank order, report; bad patterns refused."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from atomdiff.data.patterns import MeasuredPattern
from atomdiff.diffusion.constraints import CompositionConstraint
from atomdiff.diffusion.crystal import CrystalDiffusion, DataStatistics
from atomdiff.errors import InputError
from atomdiff.models.crystal import CrystalNetConfig
from atomdiff.physics.diffraction import PowderDiffractionModel, Profile, two_theta_grid
from atomdiff.refine import RefinementStage
from atomdiff.structure import Structure, read_structures
from atomdiff.structure.batch import StructureBatch
from atomdiff.tasks.solve import CANDIDATE_COLUMNS, SolveSettings, solve


def _perovskite(a: float = 3.9) -> Structure:
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure([20, 22, 8, 8, 8], frac, np.eye(3) * a)


def measured(structure: Structure, x: torch.Tensor) -> MeasuredPattern:
    model = PowderDiffractionModel("xray", "CuKa1", x, profile=Profile(0, 0, 0.02, 0.5))
    y = model(StructureBatch.from_structures([structure])).y[0].numpy()
    return MeasuredPattern(x.numpy(), y / y.max() * 1e4 + 50, None, "two_theta", "sim.xy")


@pytest.fixture(scope="module")
def tiny_model() -> CrystalDiffusion:
    torch.manual_seed(0)
    stats = DataStatistics.from_structures([_perovskite(), _perovskite(4.0), _perovskite(3.8)])
    return CrystalDiffusion(CrystalNetConfig(hidden=16, layers=1), stats).eval()


def test_solve_writes_ranked_cifs_table_plots_and_report(tiny_model, tmp_path: Path):
    pattern = measured(_perovskite(), two_theta_grid(15, 80, 0.04))
    fast = (RefinementStage(("lattice", "zero_shift"), 0.3, 2), RefinementStage(("lattice", "positions"), 0.0, 2))
    settings = SolveSettings(
        candidates=3,
        top=2,
        steps=5,
        refine_keep=3,  # all fully refined: rank order is then Rwp order
        guidance=0.5,
        profile=Profile(cutoff=20),
        stages=fast,
        texture=(0, 0, 1),
        relax_steps=5,
        cell_pass=2,
    )
    constraint = CompositionConstraint(formula={20: 1, 22: 1, 8: 3})
    result = solve(tiny_model, pattern, constraint, tmp_path, settings=settings)
    assert len(read_structures(tmp_path / "generated.extxyz")) == 3 + 2  # first pass + held cells
    assert len(read_structures(tmp_path / "relaxed.extxyz")) == 5
    cifs = sorted(tmp_path.glob("*.cif"))
    assert 1 <= len(cifs) <= 2 and cifs[0].name.startswith("01_CaO3Ti")
    for cif in cifs:
        assert read_structures(cif)[0].formula == "CaO3Ti"
    rows = list(csv.DictReader(open(tmp_path / "candidates.csv")))
    assert tuple(rows[0]) == CANDIDATE_COLUMNS and len(rows) == 5
    assert sorted(int(r["sample"]) for r in rows) == list(range(5))
    ranked = [r for r in rows if r["rank"]]
    assert [int(r["rank"]) for r in ranked] == list(range(1, len(ranked) + 1))
    assert [float(r["rwp"]) for r in ranked] == sorted(float(r["rwp"]) for r in ranked)  # as written (symmetrised)
    for r in rows:
        if r["rejected"].startswith("same structure as rank "):
            assert int(r["rejected"].split()[-1]) in [int(q["rank"]) for q in ranked]
    assert all(0.3 <= float(r["texture_ratio"]) <= 3.0 for r in ranked)  # refined along the given direction
    assert (tmp_path / "01_fit.png").stat().st_size > 1000
    page = (tmp_path / "report.html").read_text()
    assert "<canvas" in page and "data:image/png;base64," in page and "http" not in page.split("<body>")[1]
    assert result.ranked[0].rank == 1
    # the pattern was indexed (cubic P, 3.9 Å, first) and that cell held in the second pass
    cell = list(csv.DictReader(open(tmp_path / "indexing.csv")))[0]
    assert (cell["system"], cell["centring"]) == ("cubic", "P") and float(cell["a"]) == pytest.approx(3.9, rel=1e-3)
    assert "indexing the pattern" in page and result.indexed[0].system == "cubic"
    assert len(result.held_indexed) == 1 and result.held_indexed[0] is result.indexed[0]
    assert "held in the second pass with CaO3Ti" in page and result.held_contents == [("CaO3Ti", 1.0)]
    assert result.held_note(result.indexed[0]) == " — held in the second pass with CaO3Ti"
    # the wall time of every stage, in the order they ran, with the settings
    summary = json.loads((tmp_path / "summary.json").read_text())
    stages = list(summary["stage_seconds"])
    assert stages[0] == "setup" and stages[-1] == "write"
    assert stages.index("generate") < stages.index("refine") < stages.index("generate in cells")
    assert all(v >= 0 for v in summary["stage_seconds"].values())
    assert summary["seconds"] == pytest.approx(sum(summary["stage_seconds"].values()), abs=0.05)
    assert summary["stage_seconds"] == result.stage_seconds and summary["best"] == cifs[0].name
    assert summary["settings"]["candidates"] == 3 and summary["settings"]["texture"] == [0, 0, 1]


def test_patterns_that_cannot_be_solved_are_refused(tiny_model, tmp_path: Path):
    constraint = CompositionConstraint(formula={20: 1, 22: 1, 8: 3})
    settings = SolveSettings(candidates=2, steps=2, guidance=0.0)
    short = measured(_perovskite(), two_theta_grid(20, 21, 0.05))
    with pytest.raises(InputError, match="at least 50 are needed"):
        solve(tiny_model, short, constraint, tmp_path / "a", settings=settings)
    x = two_theta_grid(1.0, 8.0, 0.05).numpy()
    empty = MeasuredPattern(x, np.full_like(x, 10.0), None, "two_theta", "flat.xy")
    with pytest.raises(InputError, match="no candidate has a reflection"):
        solve(tiny_model, empty, constraint, tmp_path / "b", settings=settings)


def test_a_pattern_conditioned_model_is_conditioned_on_the_measured_pattern(tmp_path: Path):
    from atomdiff.models.pattern_encoder import PatternEncoderConfig
    from atomdiff.tasks.solve import Solver, build_target

    torch.manual_seed(0)
    encoder = PatternEncoderConfig(n_q=256, channels=(8, 8), cond_dim=8)
    stats = DataStatistics.from_structures([_perovskite(), _perovskite(4.0), _perovskite(3.8)])
    net = CrystalNetConfig(hidden=16, layers=1, cond_dim=8, encoder=dataclasses.asdict(encoder))
    model = CrystalDiffusion(net, stats).eval()
    constraint = CompositionConstraint(formula={20: 1, 22: 1, 8: 3})
    x = two_theta_grid(15, 80, 0.04)
    samples = {}
    for a in (3.7, 4.1):
        target = build_target(measured(_perovskite(a), x), "xray", "CuKa1", Profile(cutoff=20))
        for condition in (True, False):
            settings = SolveSettings(candidates=2, steps=4, guidance=0.0, condition=condition, cfg=2.0)
            solver = Solver(model, target, constraint, settings)
            samples[a, condition] = solver.generate()
        assert solver.pattern_condition().shape == (1, 8)
    cells = {key: np.stack([s.cell for s in v]) for key, v in samples.items()}
    assert np.array_equal(cells[3.7, False], cells[4.1, False])  # unconditioned: the pattern plays no part
    assert not np.allclose(cells[3.7, True], cells[4.1, True])  # conditioned: another pattern, other samples


def test_an_off_centred_candidate_is_written_in_the_symmetry_the_data_allow(tiny_model):
    from atomdiff.refine import RietveldRefiner
    from atomdiff.tasks.solve import Candidate, Solver, build_target

    truth = Structure([38, 22, 8, 8, 8], _perovskite().frac, np.eye(3) * 3.905)
    x = two_theta_grid(15, 90, 0.02)
    target = build_target(measured(truth, x), "xray", "CuKa1", Profile(0, 0, 0.02, 0.5, cutoff=20))
    shift = 0.2 / 3.905 / np.sqrt(3)  # Ti 0.2 Å off centre along [111]: R3m at spglib's usual tolerances
    off = truth.replace(frac=truth.frac + np.array([[0, 0, 0], [shift] * 3, [0, 0, 0], [0, 0, 0], [0, 0, 0]]))
    stages = (RefinementStage(("lattice", "zero_shift", "profile", "b_iso"), 0.0, 4),)
    refiner = RietveldRefiner(target, Profile(0, 0, 0.02, 0.5, cutoff=20), stages=stages, volume_scan=None)
    (refined,) = refiner.refine([off])
    candidate = Candidate(0, off, refined, 2.0, rank=1, space_group="R3m (160)")
    Solver(tiny_model, target, CompositionConstraint(formula={38: 1, 22: 1, 8: 3}), SolveSettings(top=1)).symmetrise(
        [candidate]
    )
    assert candidate.space_group == "Pm-3m (221)"
    assert candidate.refinement.rwp <= 1.03 * refined.rwp
    # refined in that group: a cubic cell, no free coordinate (every atom of Pm-3m perovskite is on a fixed site)
    assert candidate.refinement.space_group == "Pm-3m (221)"
    assert candidate.refinement.n_parameters == 1 + 1 + 4 + 3 + 1 + 6  # a, zero, UVW eta, B ×3, scale, background


def test_a_candidate_with_the_other_cu_zn_order_gets_the_right_order_refined_and_ranked_above_it(
    tiny_model, czts, tmp_path: Path
):
    """The pattern is kesterite's; the only candidate is stannite (Cu and Zn exchanged on one site pair)."""
    from atomdiff.refine import RietveldRefiner
    from atomdiff.report.html import write_solve_report
    from atomdiff.tasks.solve import Candidate, Solver, build_target, candidate_row, symmetry_of

    kesterite, stannite = czts("kesterite", primitive=True), czts("stannite", primitive=True)
    profile = Profile(0, 0, 0.02, 0.5, cutoff=20)
    stages = (
        RefinementStage(("zero_shift", "profile"), 0.0, 2),
        RefinementStage(("lattice", "zero_shift", "profile", "b_iso", "positions"), 0.0, 4),
    )
    constraint = CompositionConstraint(formula={29: 2, 30: 1, 50: 1, 16: 4})
    x = two_theta_grid(15, 90, 0.02)
    target = build_target(measured(kesterite, x), "xray", "CuKa1", profile)
    (fit,) = RietveldRefiner(target, profile, stages=stages, volume_scan=None).refine([stannite])
    settings = SolveSettings(top=1, profile=profile, stages=stages)

    def candidates() -> list[Candidate]:
        return [Candidate(3, stannite, fit, 2.3, rank=1)]

    given = candidates()
    ranked = Solver(tiny_model, target, constraint, settings).with_orderings(list(given), given)
    assert len(given) == 2 and [c.rank for c in ranked] == [1, 2]
    reordered, sampled = ranked
    assert reordered.origin == "Cu/Zn ordering of sample 3" and reordered.index == 3 and sampled.origin == "sample"
    assert symmetry_of(reordered.refinement.structure, 0.1)[0] == "I-4 (82)"  # kesterite
    assert reordered.refinement.rwp < 0.5 * sampled.refinement.rwp
    assert candidate_row(reordered)["origin"] == "Cu/Zn ordering of sample 3"
    write_solve_report(tmp_path / "report.html", measured(kesterite, x), ranked, [], given, settings)
    assert "rank 1: Cu/Zn ordering of sample 3" in (tmp_path / "report.html").read_text()
    # nothing to reorder: Cu/Zn told apart (tolerance 0, or neutrons: 7.7 against 5.7 fm)
    for solver in (
        Solver(tiny_model, target, constraint, dataclasses.replace(settings, ordering_tolerance=0.0)),
        Solver(tiny_model, build_target(measured(kesterite, x), "neutron", 1.5, profile), constraint, settings),
    ):
        given = candidates()
        out = solver.with_orderings(list(given), given)
        assert len(out) == len(given) == 1 and out[0] is given[0]
    # both orderings sampled and fitted alike already: the pattern has ranked them, nothing is added; the other
    # ordering fitted far worse (outside ordering_window): refined again from the good candidate's structure
    for factor, added in ((1.0, 0), (3.0, 1)):
        poor = dataclasses.replace(fit, structure=kesterite, rwp=factor * fit.rwp)
        given = [*candidates(), Candidate(5, kesterite, poor, 2.3, rank=2)]
        Solver(tiny_model, target, constraint, dataclasses.replace(settings, top=2)).with_orderings(list(given), given)
        assert len(given) == 2 + added
    # a candidate far behind the best (Rwp more than ordering_window × the best's) is not reordered
    sns = Structure([50, 16], [[0, 0, 0], [0.5, 0.5, 0.5]], np.eye(3) * 4.0)
    best = Candidate(0, sns, dataclasses.replace(fit, structure=sns, rwp=fit.rwp / 2), 2.8, rank=1)
    for window, added in ((1.5, 0), (2.5, 1)):
        given = [best, *candidates()]
        given[1].rank = 2
        solver = Solver(tiny_model, target, constraint, dataclasses.replace(settings, top=2, ordering_window=window))
        solver.with_orderings(list(given), given)
        assert len(given) == 2 + added


def test_written_candidates_are_compared_by_aic_when_the_weights_are_counts(tiny_model):
    from atomdiff.refine import RietveldRefiner
    from atomdiff.tasks.solve import Candidate, Solver, build_target

    truth = Structure([38, 22, 8, 8, 8], _perovskite().frac, np.eye(3) * 3.905)
    swapped = truth.replace(numbers=[22, 38, 8, 8, 8])  # Sr and Ti exchanged: same cell, wrong intensities
    x = two_theta_grid(15, 90, 0.02)
    clean = measured(truth, x)
    counts = dataclasses.replace(clean, y=np.random.default_rng(0).poisson(clean.y).astype(float))
    constraint = CompositionConstraint(formula={38: 1, 22: 1, 8: 3})
    for pattern, meaningful in ((counts, True), (clean, False)):
        target = build_target(pattern, "xray", "CuKa1", Profile(0, 0, 0.02, 0.5, cutoff=20))
        refiner = RietveldRefiner(target, Profile(0, 0, 0.02, 0.5, cutoff=20), volume_scan=None, symmetry=0.01)
        ranked = [
            Candidate(i, s, r, 2.0, rank=i + 1)
            for i, (s, r) in enumerate(zip((truth, swapped), refiner.refine([truth, swapped]), strict=True))
        ]
        Solver(tiny_model, target, constraint, SolveSettings(top=2)).compare(ranked)
        if meaningful:
            assert ranked[0].delta_aic == 0.0 and ranked[1].delta_aic > 10  # the data rule the swap out
        else:
            assert ranked[0].delta_aic is None and ranked[1].delta_aic is None  # χ² means nothing here


def test_an_element_list_solve_proposes_the_training_cell_contents(tmp_path: Path):
    """Stats from CaTiO3 (5 atoms, twice), Ca2Ti2O6 (10 atoms) and SrTiO3: with Ca, Ti, O listed, 3/4 of the
    candidates are structure predictions for the two Ca–Ti–O cells (smaller first), the rest sample species
    freely; with a formula there are no proposals."""
    from atomdiff.tasks.solve import Solver, build_target

    one = _perovskite()
    double = Structure(
        np.tile(one.numbers, 2), np.vstack([one.frac, one.frac + [0, 0, 1]]) / [1, 1, 2], np.diag([3.9, 3.9, 7.8])
    )
    strontium = Structure([38, 22, 8, 8, 8], _perovskite().frac, np.eye(3) * 3.9)
    stats = DataStatistics.from_structures([_perovskite(), _perovskite(4.0), double, strontium])
    assert stats.cells == {"Ca2O6Ti2": 1, "CaO3Ti": 2, "O3SrTi": 1}
    torch.manual_seed(0)
    CrystalDiffusion(CrystalNetConfig(hidden=16, layers=1), stats).save(tmp_path)
    model = CrystalDiffusion.load(tmp_path)
    assert model.stats.cells == stats.cells
    target = build_target(measured(_perovskite(), two_theta_grid(15, 80, 0.04)), "xray", "CuKa1", Profile(cutoff=20))
    listed = CompositionConstraint(required={20, 22, 8}).only_required(set(stats.elements))
    solver = Solver(model, target, listed, SolveSettings(candidates=8, steps=3, guidance=0.0, index_cells=0))
    groups = solver.composition_groups()
    assert [(c.formula, n) for c, n in groups] == [({20: 1, 8: 3, 22: 1}, 3), ({20: 2, 8: 6, 22: 2}, 3), (None, 2)]
    samples = solver.generate()
    assert [s.formula for s in samples[:6]] == ["CaO3Ti"] * 3 + ["Ca2O6Ti2"] * 3
    assert all(set(s.numbers) == {20, 22, 8} for s in samples)
    formula = CompositionConstraint(formula={20: 1, 22: 1, 8: 3})
    assert Solver(model, target, formula, SolveSettings(candidates=8)).composition_groups() == [(formula, 8)]
    everything_free = Solver(model, target, listed, SolveSettings(candidates=8, free_fraction=1.0))
    assert everything_free.composition_groups() == [(listed, 8)]


def test_samples_are_refined_from_their_symmetry_made_exact(tiny_model):
    """A perovskite 0.03 Å off its cubic cell is refined as the exact cubic cell; a sample without symmetry at
    0.1 Å and idealise_symprec=0 are left as they are."""
    from atomdiff.tasks.solve import Solver, build_target

    target = build_target(measured(_perovskite(), two_theta_grid(15, 80, 0.04)), "xray", "CuKa1", Profile(cutoff=20))
    near = _perovskite().replace(cell=np.diag([3.9, 3.93, 3.9]))
    solver = Solver(tiny_model, target, CompositionConstraint(formula={20: 1, 22: 1, 8: 3}), SolveSettings())
    ideal = solver.idealised(near)
    assert len(ideal) == 5 and np.allclose(ideal.lattice_parameters[:3], ideal.lattice_parameters[0])
    rng = np.random.default_rng(0)
    rattled = _perovskite().replace(frac=_perovskite().frac + rng.normal(0, 0.08, (5, 3)))
    assert solver.idealised(rattled) is rattled
    off = Solver(tiny_model, target, solver.constraint, SolveSettings(idealise_symprec=0.0))
    assert off.idealised(near) is near


def test_the_second_pass_samples_in_the_best_distinct_refined_cells(tiny_model):
    """The held cells are the best refined candidates' cells, one per distinct cell and formula; the second
    pass's samples keep those cells exactly and the candidates' cell contents."""
    from atomdiff.tasks.solve import Solver, build_target

    target = build_target(measured(_perovskite(), two_theta_grid(15, 80, 0.04)), "xray", "CuKa1", Profile(cutoff=20))
    fast = (RefinementStage(("lattice", "zero_shift"), 0.0, 2),)
    settings = SolveSettings(stages=fast, cell_pass=3, cell_pass_cells=2, relax_steps=0, steps=3, index_cells=0)
    solver = Solver(tiny_model, target, CompositionConstraint(formula={20: 1, 22: 1, 8: 3}), settings)
    starts = [_perovskite(3.9), _perovskite(3.91), _perovskite(3.6).replace(cell=np.diag([3.6, 3.6, 4.1]))]
    candidates = solver.refine(starts)
    cells = solver.best_cells(candidates)
    best = min(candidates, key=lambda c: c.refinement.rwp)
    assert len(cells) == 2 and cells[0] is best.refinement.structure  # the two cubic ones are one cell
    assert not np.allclose(cells[1].lattice_parameters, cells[0].lattice_parameters, rtol=0.01)
    held = solver.generate_in_cells(candidates)
    assert len(held) == 3
    for sample, cell in zip(held, [cells[0], cells[0], cells[1]], strict=True):
        assert sample.formula == cell.formula
        assert np.allclose(sample.lattice_parameters, cell.lattice_parameters, rtol=2e-3, atol=0.05)
    a, b, c, *angles = held[0].lattice_parameters  # the refined cell, made exactly cubic
    assert a == pytest.approx(b, abs=1e-9) and a == pytest.approx(c, abs=1e-9)
    assert np.allclose(angles, 90.0, atol=1e-9)
    assert Solver(tiny_model, target, solver.constraint, dataclasses.replace(settings, cell_pass_cells=1)).best_cells(
        candidates
    ) == [cells[0]]


def test_the_second_pass_also_holds_the_cell_that_indexes_the_pattern(tiny_model):
    """With only a wrong-celled candidate (tetragonal 3.6 × 4.1 Å), the second pass still samples in the
    measured cubic cell: indexing the pattern's peaks finds it, filled with the candidate's formula unit; the
    candidate's own cell follows; a refined cell that is the indexed lattice is not held twice."""
    from atomdiff.tasks.solve import Solver, build_target

    target = build_target(measured(_perovskite(), two_theta_grid(15, 80, 0.04)), "xray", "CuKa1", Profile(cutoff=20))
    fast = (RefinementStage(("zero_shift",), 0.0, 1),)
    settings = SolveSettings(stages=fast, cell_pass=4, cell_pass_cells=2, relax_steps=0, steps=3)
    solver = Solver(tiny_model, target, CompositionConstraint(formula={20: 1, 22: 1, 8: 3}), settings)
    indexed = solver.indexed_cells()[0]
    assert (indexed.system, indexed.centring) == ("cubic", "P")
    assert indexed.lengths[0] == pytest.approx(3.9, rel=2e-4)
    wrong = _perovskite(3.6).replace(cell=np.diag([3.6, 3.6, 4.1]))
    held = solver.held_cells(solver.refine([wrong]))
    assert len(held) == 2
    (numbers, cell), (numbers2, cell2) = held
    assert sorted(numbers) == [8, 8, 8, 20, 22] and sorted(numbers2) == [8, 8, 8, 20, 22]
    assert np.allclose(sorted(np.linalg.norm(cell, axis=1)), indexed.lengths, rtol=1e-9)
    a2, b2, c2 = sorted(np.linalg.norm(cell2, axis=1))  # the candidate's refined tetragonal cell
    assert a2 == pytest.approx(b2) and c2 / a2 > 1.05 and a2 < 3.8
    samples = solver.generate_in_cells(solver.refine([wrong]))
    assert len(samples) == 4 and np.allclose(samples[0].cell, cell, atol=1e-9)
    assert len(solver.held_indexed) == 1 and solver.held_indexed[0] is indexed
    # a refined cubic candidate is the indexed lattice: held once
    assert len(solver.held_cells(solver.refine([_perovskite(3.9)]))) == 1
    # an indexed cell ranked first that no candidate can fill (11 formula units, more atoms than any sample) is
    # passed over for the next one
    big = dataclasses.replace(indexed, lengths=(3.9 * 2.2,) * 3)
    solver._indexed = [big, indexed]
    held = solver.held_cells(solver.refine([wrong]))
    assert np.allclose(held[0][1], cell, atol=1e-9) and [c is indexed for c in solver.held_indexed] == [True]
    # from the element list only, the indexed cell is held with the likeliest content for its volume: one
    # formula unit (the training cells are 5-atom ones of 55–64 Å³; ten atoms in 59 Å³ are far too dense)
    listed = Solver(tiny_model, target, CompositionConstraint(required=frozenset({20, 22, 8})), settings)
    held = listed.held_cells(listed.refine([wrong]))
    assert sorted(held[0][0]) == [8, 8, 8, 20, 22] and listed.held_weights == [1.0]
    assert np.allclose(held[0][1], cell, atol=1e-9) and listed.held[0] is held[0]


def test_the_index_share_puts_that_share_of_the_second_pass_in_the_indexed_cells(tiny_model):
    """With ``index_share`` the indexed cells (held first) get that share of the second pass, the refined cells
    the rest, each group shared out evenly; with only one kind of cell held, or without it, all share evenly."""
    from atomdiff.tasks.solve import Solver, build_target

    target = build_target(measured(_perovskite(), two_theta_grid(15, 80, 0.04)), "xray", "CuKa1", Profile(cutoff=20))
    fast = (RefinementStage(("zero_shift",), 0.0, 1),)
    settings = SolveSettings(stages=fast, cell_pass=8, relax_steps=0, steps=3, index_share=0.75)
    solver = Solver(tiny_model, target, CompositionConstraint(formula={20: 1, 22: 1, 8: 3}), settings)
    wrong = _perovskite(3.6).replace(cell=np.diag([3.6, 3.6, 4.1]))
    samples = solver.generate_in_cells(solver.refine([wrong]))  # the indexed cubic cell, then the refined one
    assert len(solver.held_indexed) == 1 and len(samples) == 8
    assert [np.allclose(s.cell, samples[0].cell) for s in samples] == [True] * 6 + [False] * 2
    solver.held_indexed = solver.held_indexed * 2  # two indexed cells and one refined
    assert solver.cell_shares(3) == [3, 3, 2]
    assert solver.cell_shares(2) == [4, 4]  # only indexed cells held
    solver.held_indexed = []
    assert solver.cell_shares(3) == [3, 3, 2]
    even = Solver(tiny_model, target, solver.constraint, dataclasses.replace(settings, index_share=None))
    even.held_indexed = solver.held_indexed
    assert even.cell_shares(2) == [4, 4]
    with pytest.raises(InputError, match="index-share"):
        Solver(tiny_model, target, solver.constraint, dataclasses.replace(settings, index_share=1.5))


def test_with_an_element_list_an_indexed_cell_is_held_with_the_likeliest_contents():
    """Without a formula the atom count of an indexed cell is weighed from the training cells: how many have
    that primitive content, times the likelihood of its volume per atom. A 44 Å³ carbon cell (6.3 Å³ per atom
    for 7 atoms, a count never seen) is held with 8 atoms first and 6 second; at 37.8 Å³ with 6 only (8 or 5
    have under 1/8 of the weight); the shares of the indexed cell's samples follow the weights. With a formula,
    the multiples of the formula's unit that the formula is a part or a multiple of are weighed."""
    from types import SimpleNamespace

    from atomdiff.tasks.solve import Solver

    stats = DataStatistics(
        cells={"C6": 10, "C8": 10},
        primitive_cells={"C2": 5, "C6": 10, "C8": 10},
        volume_per_atom=[math.log(6.3), 0.1],
        elements=[6],
    )
    carbon = CompositionConstraint(required=frozenset({6}), atoms=(1, 24))
    solver = Solver(SimpleNamespace(stats=stats), None, carbon, SolveSettings())
    options = solver.indexed_contents(7 * 6.3, [], 24)
    assert [len(n) for n, _ in options] == [8, 6] and set(options[0][0]) == {6}
    assert options[0][1] > options[1][1] > 0.125 and sum(w for _, w in options) == pytest.approx(1.0)
    assert [len(n) for n, _ in solver.indexed_contents(7 * 6.3, [], 7)] == [6, 7]  # no more atoms than sampled
    assert [(len(n), w) for n, w in solver.indexed_contents(6 * 6.3, [], 24)] == [(6, 1.0)]
    one = Solver(SimpleNamespace(stats=stats), None, carbon, SolveSettings(index_contents=1))
    assert [len(n) for n, _ in one.indexed_contents(7 * 6.3, [], 24)] == [8]
    solver.held_indexed, solver.held_weights = ["cell", "cell"], [w for _, w in options]
    assert solver.cell_shares(3) == [7, 5, 4]  # 12 of 16 to the indexed cell, shared 0.57 : 0.43
    with pytest.raises(InputError, match="index-contents"):
        Solver(None, None, carbon, SolveSettings(index_contents=0))
    # no content whose volume per atom is more than 3 standard deviations off (13.1 Å³ for 24 atoms)
    assert solver.indexed_contents(24 * 6.3 * math.exp(0.31), [], 24) == []
    # with a formula, the multiples of its unit that it is a part or a multiple of: C12 allows 6 atoms here, not
    # 8; C10 nothing (5 or 10 atoms in 44 Å³ are more than 3 σ off); "candidates" is the rule before session 33
    c12 = CompositionConstraint(formula={6: 12})
    by_statistics = Solver(SimpleNamespace(stats=stats), None, c12, SolveSettings())
    assert by_statistics.by_statistics()
    assert [(len(n), w) for n, w in by_statistics.indexed_contents(7 * 6.3, [], 24)] == [(6, 1.0)]
    c10 = CompositionConstraint(formula={6: 10})
    assert Solver(SimpleNamespace(stats=stats), None, c10, SolveSettings()).indexed_contents(7 * 6.3, [], 24) == []
    assert [
        len(n)
        for n, _ in Solver(SimpleNamespace(stats=stats), None, c10, SolveSettings()).indexed_contents(10 * 6.3, [], 24)
    ] == [10]
    assert not Solver(None, None, c10, SolveSettings(held_contents="candidates")).by_statistics()
    with pytest.raises(InputError, match="held-contents"):
        Solver(None, None, carbon, SolveSettings(held_contents="guess"))


def test_cell_contents_fill_an_indexed_cell_with_whole_formula_units():
    from atomdiff.tasks.solve import cell_contents_for

    perovskite = _perovskite(3.9)  # 5 atoms, 59.3 Å³
    assert sorted(cell_contents_for(perovskite, 2 * perovskite.volume)) == [8] * 6 + [20] * 2 + [22] * 2
    assert sorted(cell_contents_for(perovskite, 1.1 * perovskite.volume)) == [8, 8, 8, 20, 22]
    assert cell_contents_for(perovskite, 1.5 * perovskite.volume) is None  # neither 1 nor 2 units fit
    assert cell_contents_for(perovskite, 0.5 * perovskite.volume) is None


def test_a_refined_cell_is_held_with_its_bravais_symmetry_made_exact():
    from pymatgen.core import Lattice

    from atomdiff.tasks.solve import lattice_with_its_symmetry

    off = Lattice.from_parameters(6.65041, 6.64761, 6.64879, 131.829, 131.753, 70.562).matrix  # refined kesterite
    ideal = Lattice(lattice_with_its_symmetry(off))
    assert np.allclose(ideal.abc, ideal.a) and np.isclose(ideal.alpha, ideal.beta)  # body-centred tetragonal
    assert ideal.volume == pytest.approx(abs(np.linalg.det(off)), rel=1e-5)
    skew = np.array([[3.0, 0.0, 0.0], [0.7, 4.1, 0.0], [0.4, -0.9, 5.3]])
    assert np.allclose(Lattice(lattice_with_its_symmetry(skew)).volume, abs(np.linalg.det(skew)))


def test_samples_are_relaxed_before_refinement_and_failures_keep_the_sample(tiny_model):
    """An atom pushed off its fcc site goes back (cell held: the cell is unchanged); a potential that fails
    leaves the sample as it was; relax_steps=0 relaxes nothing."""
    from ase.calculators.lj import LennardJones

    from atomdiff.tasks.solve import Solver, build_target

    target = build_target(measured(_perovskite(), two_theta_grid(15, 80, 0.04)), "xray", "CuKa1", Profile(cutoff=20))
    fcc = Structure([29] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0.04, 0.5, 0.5]], np.eye(3) * 3.8)
    solver = Solver(tiny_model, target, CompositionConstraint(formula={29: 1}), SolveSettings(relax_fmax=0.01))
    solver._calculator = LennardJones(sigma=2.4, rc=6.0)
    (relaxed,) = solver.relax([fcc], hold_cell=True)
    assert np.array_equal(relaxed.cell, fcc.cell)
    shift = relaxed.frac[3] - relaxed.frac[0]
    assert abs(shift[0] - round(shift[0])) < 0.005

    class Broken(LennardJones):
        def calculate(self, *args, **kwargs):
            raise RuntimeError("no forces for this one")

    solver._calculator = Broken()
    assert solver.relax([fcc])[0] is fcc

    class FailsOnFive(LennardJones):
        def calculate(self, atoms=None, *args, **kwargs):
            if len(atoms) == 5:
                raise RuntimeError("no forces for five atoms")
            super().calculate(atoms, *args, **kwargs)

    # the batch fails on one sample: that one is kept as it was, the others are still relaxed
    solver._calculator = FailsOnFive(sigma=2.4, rc=6.0)
    five = _perovskite()
    moved, kept = solver.relax([fcc, five], hold_cell=True)
    assert kept is five and moved is not fcc
    assert abs((moved.frac[3] - moved.frac[0])[0] - round((moved.frac[3] - moved.frac[0])[0])) < 0.005
    off = Solver(tiny_model, target, solver.constraint, SolveSettings(relax_steps=0))
    assert off.relax([fcc])[0] is fcc


def test_each_sample_keeps_the_better_of_its_sampled_and_relaxed_refinement(tiny_model):
    from atomdiff.tasks.solve import Solver, build_target

    target = build_target(measured(_perovskite(), two_theta_grid(15, 80, 0.04)), "xray", "CuKa1", Profile(cutoff=20))
    fast = (RefinementStage(("lattice", "zero_shift"), 0.0, 2), RefinementStage(("lattice", "positions"), 0.0, 2))
    solver = Solver(tiny_model, target, CompositionConstraint(formula={20: 1, 22: 1, 8: 3}), SolveSettings(stages=fast))
    swapped = _perovskite().replace(numbers=np.array([22, 20, 8, 8, 8]))  # Ca and Ti exchanged: a poor fit
    samples = [swapped, _perovskite(3.92), swapped]
    relaxed = [_perovskite(), samples[1], swapped.replace(cell=np.eye(3) * 4.6)]  # better, not moved, worse
    solver.relax = lambda structures, **_: relaxed if structures == samples else pytest.fail("relaxed other")
    alone = solver.refine(samples)
    out = solver.refine_and_relax(samples, first=10)
    assert [c.index for c in out] == [10, 11, 12]
    relaxed_alone = solver.refine(relaxed[:1])[0].refinement.rwp
    assert relaxed_alone < alone[0].refinement.rwp - 0.02
    assert out[0].refinement.rwp == pytest.approx(relaxed_alone)  # the relaxed start won
    assert out[1].refinement.rwp == pytest.approx(alone[1].refinement.rwp)
    assert out[2].refinement.rwp == pytest.approx(alone[2].refinement.rwp)  # the sampled one stayed


def _counted(structure: Structure, seed: int = 0) -> MeasuredPattern:
    """A pattern in whole counts (Poisson noise), so that its expected R factor means something."""
    pattern = measured(structure, two_theta_grid(15, 80, 0.04))
    y = np.random.default_rng(seed).poisson(pattern.y).astype(float)
    return dataclasses.replace(pattern, y=y)


def test_expected_rwp_only_when_the_weights_mean_something(tiny_model):
    from atomdiff.physics import agreement
    from atomdiff.tasks.solve import Solver, build_target

    def solver(pattern: MeasuredPattern) -> Solver:
        target = build_target(pattern, "xray", "CuKa1", Profile(cutoff=20))
        return Solver(tiny_model, target, CompositionConstraint(formula={20: 1, 22: 1, 8: 3}))

    counts = _counted(_perovskite())
    y = torch.as_tensor(counts.y)
    assert solver(counts).target.expected_rwp() == pytest.approx(float(agreement.rexp(y, 1 / y.clamp_min(1))))
    scaled = dataclasses.replace(counts, y=counts.y / counts.y.max())  # arbitrary units, no uncertainties
    assert solver(scaled).target.expected_rwp() is None
    given = dataclasses.replace(scaled, sigma=np.full_like(scaled.y, 0.01))  # uncertainties with the pattern
    assert solver(given).target.expected_rwp() == pytest.approx(
        float(agreement.rexp(torch.as_tensor(given.y), 1e4 + 0 * y))
    )


def test_a_fit_to_the_counting_noise_skips_relaxation_and_the_second_pass(tiny_model):
    from atomdiff.tasks.solve import Solver, build_target

    target = build_target(_counted(_perovskite()), "xray", "CuKa1", Profile(cutoff=20))
    fast = (
        RefinementStage(("lattice", "zero_shift", "profile"), 0.0, 3),
        RefinementStage(("lattice", "b_iso"), 0.0, 3),
    )
    constraint = CompositionConstraint(formula={20: 1, 22: 1, 8: 3})
    swapped = _perovskite(3.92).replace(numbers=np.array([22, 20, 8, 8, 8]))
    calls: list[str] = []

    def solver(samples: list[Structure], stop_gof: float) -> Solver:
        settings = SolveSettings(stages=fast, stop_gof=stop_gof, cell_pass=2)
        out = Solver(tiny_model, target, constraint, settings)
        out.generate = lambda progress=None: samples
        out.relax = lambda structures, **_: calls.append("relax") or list(structures)
        out.generate_in_cells = lambda candidates, progress=None: calls.append("second pass") or []
        return out

    right = solver([swapped, _perovskite(3.92)], SolveSettings().stop_gof)
    candidates = right.run()
    assert right.fits_to_noise(candidates) and calls == []  # the true structure fits to the noise: done
    rwp = min(c.refinement.rwp for c in candidates)
    assert rwp <= SolveSettings().stop_gof * right.target.expected_rwp()
    assert solver([swapped], 1.1).run() and calls == ["relax", "second pass"]  # a wrong structure does not
    calls.clear()
    assert solver([_perovskite(3.92)], 0.0).run() and calls == ["relax", "second pass"]  # 0: never skipped
    with pytest.raises(InputError, match="stop-gof"):
        Solver(tiny_model, target, constraint, SolveSettings(stop_gof=-1))
    with pytest.raises(InputError, match="relax-filter"):
        Solver(tiny_model, target, constraint, SolveSettings(relax_filter="exp"))


def test_restarts_redraw_the_best_distinct_candidates_in_their_cells(tiny_model):
    """The restart pass re-noises the best distinct candidates' refined structures and denoises them again in
    their (symmetry-exact) cells: the samples keep those cells and cell contents, shared out evenly, and are
    refined as candidates after the others; a fit to the counting noise skips it."""
    from atomdiff.tasks.solve import Solver, build_target, lattice_with_its_symmetry

    target = build_target(_counted(_perovskite()), "xray", "CuKa1", Profile(cutoff=20))
    fast = (RefinementStage(("lattice", "zero_shift"), 0.0, 2),)
    constraint = CompositionConstraint(formula={20: 1, 22: 1, 8: 3})
    swapped = _perovskite(3.95).replace(numbers=np.array([22, 20, 8, 8, 8]))
    settings = SolveSettings(stages=fast, cell_pass=0, relax_steps=0, steps=4, restarts=3, restart_from=2, stop_gof=0)
    solver = Solver(tiny_model, target, constraint, settings)
    solver.generate = lambda progress=None: [swapped, _perovskite(3.6)]
    candidates = solver.run()
    assert len(candidates) == 5 and [c.index for c in candidates] == [0, 1, 2, 3, 4]
    first = sorted(candidates[:2], key=lambda c: c.refinement.rwp)
    for c, start in zip(candidates[2:], [first[0], first[0], first[1]], strict=True):
        held = lattice_with_its_symmetry(start.refinement.structure.cell)
        assert np.allclose(c.sample.cell, held, atol=1e-6)
        assert sorted(c.sample.numbers) == sorted(start.refinement.structure.numbers)
    full = (
        RefinementStage(("lattice", "zero_shift", "profile"), 0.0, 3),
        RefinementStage(("lattice", "b_iso"), 0.0, 3),
    )
    noise = dataclasses.replace(settings, stages=full, stop_gof=SolveSettings().stop_gof)
    done = Solver(tiny_model, target, constraint, noise)
    done.generate = lambda progress=None: [_perovskite(3.92)]
    assert len(done.run()) == 1 and "restarts" in done.skipped
    with pytest.raises(InputError, match="restart-level"):
        Solver(tiny_model, target, constraint, dataclasses.replace(settings, restart_level=0.0))


def test_the_report_says_what_a_fit_to_the_noise_skipped(tiny_model, tmp_path: Path, monkeypatch):
    from atomdiff.tasks.solve import Solver

    monkeypatch.setattr(Solver, "generate", lambda self, progress=None: [_perovskite(3.92)])
    fast = (
        RefinementStage(("lattice", "zero_shift", "profile"), 0.0, 3),
        RefinementStage(("lattice", "b_iso"), 0.0, 3),
    )
    settings = SolveSettings(candidates=1, top=1, profile=Profile(cutoff=20), stages=fast, relax_steps=5, cell_pass=2)
    constraint = CompositionConstraint(formula={20: 1, 22: 1, 8: 3})
    result = solve(tiny_model, _counted(_perovskite()), constraint, tmp_path, settings=settings)
    assert result.skipped == ["relaxation", "second pass"] and result.expected_rwp > 0
    assert result.ranked[0].refinement.rwp <= settings.stop_gof * result.expected_rwp
    page = (tmp_path / "report.html").read_text()
    assert "Rexp" in page and "skipped: relaxation, second pass" in page
    assert "held in the second pass" not in page


def test_samples_can_be_refined_in_their_space_group(tiny_model):
    from atomdiff.tasks.solve import Solver, build_target

    target = build_target(_counted(_perovskite()), "xray", "CuKa1", Profile(cutoff=20))
    fast = (
        RefinementStage(("lattice", "zero_shift", "profile"), 0.0, 3),
        RefinementStage(("lattice", "b_iso", "positions"), 0.0, 3),
    )
    constraint = CompositionConstraint(formula={20: 1, 22: 1, 8: 3})
    rng = np.random.default_rng(0)
    near = _perovskite(3.92)
    near = near.replace(frac=near.frac + rng.normal(0, 0.004, near.frac.shape))  # within 0.1 Å of Pm-3m
    found = {}
    for in_group in (False, True):
        settings = SolveSettings(stages=fast, refine_in_group=in_group, relax_steps=0, cell_pass=0)
        (candidate,) = Solver(tiny_model, target, constraint, settings).refine([near])
        found[in_group] = candidate.refinement
    assert found[False].space_group is None and found[True].space_group == "Pm-3m (221)"
    # cubic a instead of six strains, no free coordinate instead of fifteen
    assert found[True].n_parameters == found[False].n_parameters - 5 - 15
    assert found[True].rwp <= 1.05 * target.expected_rwp()


def test_an_indexed_cell_gives_most_candidates_to_the_cell_contents_that_fill_it(tmp_path: Path):
    """The pattern of a 3.9 Å perovskite indexes to a 59 Å³ primitive cell: 5 atoms fill it at the training
    cells' ~12 Å³ per atom, 10 atoms would need 5.9 Å³ each, so the 5-atom content gets most proposed candidates
    (weights from the log-normal volume per atom) and the 10-atom one keeps a share only while plausible."""
    from atomdiff.tasks.solve import Solver, build_target

    one = _perovskite()
    double = Structure(
        np.tile(one.numbers, 2), np.vstack([one.frac, one.frac + [0, 0, 1]]) / [1, 1, 2], np.diag([3.9, 3.9, 7.8])
    )
    stats = DataStatistics.from_structures([_perovskite(), _perovskite(4.0), double])
    model = CrystalDiffusion(CrystalNetConfig(hidden=16, layers=1), stats).eval()
    target = build_target(measured(_perovskite(), two_theta_grid(15, 80, 0.04)), "xray", "CuKa1", Profile(cutoff=20))
    listed = CompositionConstraint(required={20, 22, 8}).only_required(set(stats.elements))
    solver = Solver(model, target, listed, SolveSettings(candidates=20))
    proposals = listed.cell_proposals(stats.cells)
    assert [sum(p.values()) for p in proposals] == [5, 10]
    mean, spread = stats.log_volume_per_atom()
    volume = abs(np.linalg.det(solver.indexed_cells()[0].primitive))
    z = [(np.log(volume / n) - mean) / spread for n in (5, 10)]
    weights = solver.proposal_weights(proposals)
    assert weights / weights.sum() == pytest.approx(np.exp(-0.5 * np.square(z)) / np.exp(-0.5 * np.square(z)).sum())
    assert weights[0] > 3 * weights[1]
    groups = [(c.formula, n) for c, n in solver.composition_groups()]
    assert groups[0][0] == {20: 1, 8: 3, 22: 1} and groups[-1] == (None, 5)
    assert groups[0][1] > 3 * sum(n for _, n in groups[1:-1]) and sum(n for _, n in groups) == 20


def test_candidates_are_shared_in_proportion_to_weights_by_largest_remainders():
    from atomdiff.tasks.solve import largest_remainder

    assert largest_remainder(15, [1, 1]) == [8, 7]
    assert largest_remainder(15, [1.0, 0.0706]) == [14, 1]
    assert largest_remainder(6, [1, 1, 1]) == [2, 2, 2]
    assert largest_remainder(7, [1, 2, 4]) == [1, 2, 4]
    assert largest_remainder(3, [0.1, 0.2, 0.3, 0.4]) == [0, 1, 1, 1]
    with pytest.raises(ValueError):
        largest_remainder(3, [0, 0])


def test_samples_in_a_held_cell_are_refined_without_searching_for_the_lattice(tiny_model, monkeypatch):
    """Held-cell samples skip the volume and axial scans and the broadened stages (the cell is the measured
    one) and still refine to the truth; free samples get the whole schedule."""
    import atomdiff.tasks.solve as solve_module
    from atomdiff.tasks.solve import Solver, build_target

    made = []

    class Recording(solve_module.RietveldRefiner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(solve_module, "RietveldRefiner", Recording)
    target = build_target(measured(_perovskite(), two_theta_grid(15, 80, 0.04)), "xray", "CuKa1", Profile(cutoff=20))
    solver = Solver(tiny_model, target, CompositionConstraint(formula={20: 1, 22: 1, 8: 3}), SolveSettings())
    (held,) = solver.refine([_perovskite()], cell_known=True)
    (free,) = solver.refine([_perovskite()])
    assert made[0].volume_scan is None and made[0].axial_scan is None
    assert [st.extra_fwhm for st in made[0].stages] == [0.0, 0.0]
    assert made[0].stages == tuple(st for st in SolveSettings().stages if st.extra_fwhm == 0)
    assert made[1].stages == SolveSettings().stages and made[1].volume_scan is not None
    assert held.refinement.rwp == pytest.approx(free.refinement.rwp, abs=2e-3) and held.refinement.rwp < 0.05
