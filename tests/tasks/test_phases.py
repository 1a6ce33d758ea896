"""Quantitative phase analysis: a 5 wt% secondary phase is found within ±2 wt%; an absent phase is dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atomdiff.cli.main import run
from atomdiff.data.patterns import MeasuredPattern, write_pattern
from atomdiff.errors import InputError
from atomdiff.physics.diffraction import PowderDiffractionModel, Profile, two_theta_grid
from atomdiff.refine import RefinementStage
from atomdiff.structure import Structure, write_structures
from atomdiff.structure.batch import StructureBatch
from atomdiff.tasks.phases import analyse_phases, cell_mass, hill_howard, residual_pattern

FCC = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def nacl() -> Structure:
    return Structure([11] * 4 + [17] * 4, np.vstack([FCC, FCC + [0.5, 0, 0]]), np.eye(3) * 5.64)


def silicon() -> Structure:
    return Structure([14] * 8, np.vstack([FCC, FCC + 0.25]), np.eye(3) * 5.431)


def periclase() -> Structure:
    return Structure([12] * 4 + [8] * 4, np.vstack([FCC, FCC + [0.5, 0, 0]]), np.eye(3) * 4.212)


def rutile(x: float = 0.3053) -> Structure:
    """TiO2 (P4_2/mnm): O at (x, x, 0) and its images, the one free coordinate."""
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [x, x, 0], [-x, -x, 0], [0.5 + x, 0.5 - x, 0.5], [0.5 - x, 0.5 + x, 0.5]]
    return Structure([22, 22, 8, 8, 8, 8], np.mod(frac, 1.0), np.diag([4.594, 4.594, 2.959]))


def mixture(weights: dict[str, float], seed: int = 0, step: float = 0.03, stop: float = 90) -> MeasuredPattern:
    """Pattern of a mixture with the given weight fractions (scales S_p = w_p / (ZMV)_p), with Poisson noise."""
    x = two_theta_grid(20, stop, step)
    model = PowderDiffractionModel(
        "xray", "CuKa1", x, profile=Profile(0.008, -0.004, 0.01, 0.4, cutoff=20), zero_shift=0.02, b_iso=0.5
    )
    phases = {"NaCl": nacl(), "Si": silicon(), "MgO": periclase(), "TiO2": rutile()}
    y = torch.zeros_like(x)
    for name, w in weights.items():
        s = phases[name]
        y = y + w / (cell_mass(s) * s.volume) * model(StructureBatch.from_structures([s])).y[0]
    y = y / y.max() * 5e4 + 200
    y = np.random.default_rng(seed).poisson(y.numpy()).astype(float)
    return MeasuredPattern(x.numpy(), y, None, "two_theta", "mixture.xy")


def test_hill_howard_of_equal_scales_weights_by_cell_mass_and_volume():
    w, sigma = hill_howard(np.array([1.0, 1.0]), np.zeros((2, 2)), [nacl(), silicon()])
    c = np.array([cell_mass(nacl()) * nacl().volume, cell_mass(silicon()) * silicon().volume])
    assert np.allclose(w, c / c.sum()) and np.allclose(sigma, 0)


def test_secondary_phase_at_5_wt_percent_is_found_and_an_absent_phase_dropped():
    pattern = mixture({"NaCl": 0.95, "Si": 0.05})
    stages = (
        RefinementStage(("lattice", "zero_shift"), extra_fwhm=0.1, iterations=2),
        RefinementStage(("lattice", "zero_shift", "profile", "b_iso"), extra_fwhm=0.0, iterations=4),
    )
    candidates = [("NaCl", nacl()), ("Si", silicon()), ("MgO", periclase())]
    analysis = analyse_phases(pattern, candidates, stages=stages)
    found = {p.name: p for p in analysis.phases}
    assert set(found) == {"NaCl", "Si"}
    assert [name for name, _ in analysis.dropped] == ["MgO"]
    assert abs(found["Si"].weight_fraction - 0.05) < 0.02
    assert 0 < found["Si"].sigma < 0.02
    assert analysis.rwp < 0.07
    assert analysis.gof < 2 and analysis.warning() is None  # explained to the noise: no warning
    assert found["Si"].own_lines > 0.9  # silicon's lines stand clear of NaCl's
    # each lattice refined in its space group: the cubic cells stay exactly cubic
    assert (found["NaCl"].space_group, found["Si"].space_group) == ("Fm-3m (225)", "Fd-3m (227)")
    for phase in found.values():
        a, b, c, al, be, ga = phase.refinement.structure.lattice_parameters
        assert max(abs(a - b), abs(a - c)) < 1e-9 and max(abs(al - 90), abs(be - 90), abs(ga - 90)) < 1e-7


def test_a_phase_whose_lines_all_fall_on_another_phase_lines_is_reported_as_not_confirmed():
    """Simple-cubic Cl with a = a(NaCl)/2 has reflections only where NaCl's all-even ones are: 10 wt% of it is
    refined (the intensity ratios do hold it), but the pattern has no line of its own to confirm it."""
    x = two_theta_grid(20, 90, 0.03)
    model = PowderDiffractionModel(
        "xray", "CuKa1", x, profile=Profile(0.008, -0.004, 0.01, 0.4, cutoff=20), zero_shift=0.02, b_iso=0.5
    )
    buried = Structure([17], np.zeros((1, 3)), np.eye(3) * 2.82)
    y = sum(
        w / (cell_mass(s) * s.volume) * model(StructureBatch.from_structures([s])).y[0]
        for s, w in ((nacl(), 0.9), (buried, 0.1))
    )
    y = np.random.default_rng(0).poisson((y / y.max() * 5e4 + 200).numpy()).astype(float)
    stages = (
        RefinementStage(("lattice", "zero_shift"), extra_fwhm=0.1, iterations=2),
        RefinementStage(("lattice", "zero_shift", "profile", "b_iso"), extra_fwhm=0.0, iterations=4),
    )
    pattern = MeasuredPattern(x.numpy(), y, None, "two_theta", "buried.xy")
    analysis = analyse_phases(pattern, [("NaCl", nacl()), ("Cl", buried)], stages=stages)
    found = {p.name: p for p in analysis.phases}
    assert abs(found["Cl"].weight_fraction - 0.1) < 0.02
    assert found["Cl"].own_lines < 0.05 and found["Cl"].buried_under == "NaCl"
    assert found["NaCl"].own_lines > 0.95
    assert "Cl is not confirmed by this pattern" in analysis.warning() and "lines of NaCl" in analysis.warning()
    assert "NaCl is not confirmed" not in analysis.warning()


def test_the_main_phase_coordinates_are_refined_jointly_and_the_minor_phase_coordinates_kept():
    """Rutile known 0.1 Å off (O at x = 0.29, true 0.3053) with 8 wt% Si: with every coordinate fixed its misfit
    stays; the default refines the main phase's x back in the joint fit. As a minor phase (NaCl main) its
    coordinates are left where they are."""
    pattern = mixture({"TiO2": 0.92, "Si": 0.08})
    stages = (
        RefinementStage(("lattice", "zero_shift"), extra_fwhm=0.1, iterations=2),
        RefinementStage(("lattice", "zero_shift", "profile", "b_iso"), extra_fwhm=0.0, iterations=4),
    )
    candidates = [("TiO2", rutile(0.29)), ("Si", silicon())]
    fixed = analyse_phases(pattern, candidates, stages=stages, positions_above=None)
    joint = analyse_phases(pattern, candidates, stages=stages)
    assert fixed.phases[0].refinement.structure.frac[2, 0] == pytest.approx(0.29) and fixed.rwp > 0.09
    assert joint.phases[0].refinement.structure.frac[2, 0] == pytest.approx(0.3053, abs=0.001) and joint.rwp < 0.06
    si = {p.name: p for p in joint.phases}["Si"]
    assert abs(si.weight_fraction - 0.08) < 0.01
    assert joint.phases[0].refinement.n_parameters == fixed.phases[0].refinement.n_parameters + 1  # x
    minor = analyse_phases(
        mixture({"NaCl": 0.9, "TiO2": 0.1}), [("NaCl", nacl()), ("TiO2", rutile(0.29))], stages=stages
    )
    assert {p.name: p for p in minor.phases}["TiO2"].refinement.structure.frac[2, 0] == pytest.approx(0.29)
    with pytest.raises(InputError, match="positions_above"):
        analyse_phases(pattern, candidates, stages=stages, positions_above=0.0)


def test_a_phase_is_dropped_when_the_fit_without_it_is_within_its_bic_penalty(monkeypatch):
    """Backward elimination on made-up joint fits (χ² of each set of phases given): B and C are both 5 σ, but
    the fit without B is worse by less than B's BIC penalty (10 ln n) and without C by far more; the 3 σ rule
    would keep both. D, 0.3 wt% but precise (100 σ), goes first: below the fraction floor whatever its σ."""
    import types

    import atomdiff.tasks.phases as phases

    pattern = mixture({"NaCl": 1.0}, step=0.05, stop=60)
    n = len(pattern.x)
    chi2 = {"ABCD": 990.0, "ABC": 1000.0, "AC": 1040.0, "AB": 1300.0, "A": 1340.0}
    made = {name: nacl() for name in "ABCD"}

    class RefinerStub:
        def __init__(self, *args, **kwargs):
            pass

        def refine(self, structures, progress=None):
            names = [next(k for k, v in made.items() if v is x) for x in structures]
            return [
                types.SimpleNamespace(
                    name=k, structure=x, space_group="Fm-3m (225)", profile=Profile(), zero_shift=0.0, b_iso={}
                )
                for k, x in zip(names, structures, strict=True)
            ]

    class FitStub(phases._JointFit):
        def fractions(self):
            w = np.array([{"A": 0.9, "B": 0.05, "C": 0.05, "D": 0.003}[r.name] for r in self.results])
            return w, w / np.array([{"A": 100.0, "B": 5.0, "C": 5.0, "D": 100.0}[r.name] for r in self.results])

    def fit_of(target, results):
        key = "".join(r.name for r in results)
        k = len(results)
        return FitStub(results, torch.ones(k, n), np.ones(k), np.eye(k), np.zeros(n), np.zeros(n), chi2[key], [10] * k)

    monkeypatch.setattr(phases, "RietveldRefiner", RefinerStub)
    monkeypatch.setattr(phases._JointFit, "of", staticmethod(fit_of))
    analysis = analyse_phases(pattern, list(made.items()))
    assert [p.name for p in analysis.phases] == ["A", "C"]
    assert [name for name, _ in analysis.dropped] == ["D", "B"]
    reduced = 1000.0 / (n - 30 - 6)
    assert f"rises by {40 / reduced:.0f}, below the BIC penalty {10 * np.log(n):.0f}" in analysis.dropped[1][1]
    assert [p.name for p in analyse_phases(pattern, list(made.items()), selection="sigma").phases] == ["A", "B", "C"]
    with pytest.raises(InputError, match="selection"):
        analyse_phases(pattern, list(made.items()), selection="aic")


def test_residual_of_the_known_phases_keeps_the_other_phase_and_the_background():
    pattern = mixture({"NaCl": 0.7, "Si": 0.3}, seed=2, step=0.05, stop=60)
    stages = (RefinementStage(("lattice", "zero_shift", "profile", "b_iso"), extra_fwhm=0.0, iterations=4),)
    known = analyse_phases(pattern, [("NaCl", nacl())], stages=stages)
    assert "unexplained" in known.warning() and known.gof > 10  # silicon is missing from the candidates
    rest = residual_pattern(pattern, known)
    assert np.allclose(rest.sigma, np.sqrt(np.maximum(pattern.y, 1)))  # the measured counts' uncertainties
    assert rest.meta["residual_of"] == ["NaCl"] and pattern.sigma is None  # the measured pattern is left alone
    above = rest.y - known.background  # what the background does not explain
    peak = {h: int(np.argmin(abs(pattern.x - tt))) for h, tt in (("NaCl 200", 31.7), ("Si 111", 28.44))}
    window = {h: slice(k - 6, k + 7) for h, k in peak.items()}
    observed = {h: (pattern.y - known.background)[w].max() for h, w in window.items()}
    # NaCl's strongest peak is gone (down to noise and the small shared misfit); silicon's stays whole
    assert abs(above[window["NaCl 200"]]).max() < 0.05 * observed["NaCl 200"]
    assert above[window["Si 111"]].max() > 0.9 * observed["Si 111"]


def test_generated_phases_are_solved_against_the_residual_of_the_known_ones(monkeypatch):
    import atomdiff.tasks.phases as phases

    pattern = mixture({"NaCl": 0.7, "Si": 0.3}, seed=2, step=0.05, stop=60)
    seen = []

    def solve_stub(model, against, comp, *, seed, label, **kwargs):  # records what the solve would be given
        seen.append((model, against, comp, seed, label))
        return silicon()

    monkeypatch.setattr(phases, "generated_phase", solve_stub)
    formulas = [("Si", {14: 1}), ("Si2", {14: 2})]
    found = phases.generated_phases(pattern, [("NaCl", nacl())], formulas, lambda text: f"model {text}")
    assert [name for name, _ in found] == ["generated Si", "generated Si2"]
    assert [(m, c, s, lab) for m, _, c, s, lab in seen] == [
        ("model Si", {14: 1}, 0, "Si"),
        ("model Si2", {14: 2}, 1, "Si2"),
    ]
    against = seen[0][1]
    assert against.meta["residual_of"] == ["NaCl"]  # NaCl's peaks taken out, the rest of the pattern kept
    nacl_200, si_111 = (int(np.argmin(abs(pattern.x - tt))) for tt in (31.7, 28.44))
    assert against.y[nacl_200] < 0.1 * pattern.y[nacl_200] and against.y[si_111] > 0.9 * pattern.y[si_111]
    # the next one sees the same residual: a minor phase generated first does not take the next one's peaks
    assert seen[1][1] is against
    # without known phases the first is the main phase, solved against the measured pattern itself, and the
    # others against what it leaves
    seen.clear()
    phases.generated_phases(pattern, [], [*formulas, ("Si3", {14: 3})], lambda text: None)
    assert seen[0][1] is pattern
    assert [seen[k][1].meta["residual_of"] for k in (1, 2)] == [["generated Si"]] * 2
    assert seen[1][1].y[si_111] < 0.1 * pattern.y[si_111]


def test_a_generated_phase_is_returned_in_the_space_group_the_solve_reports(monkeypatch):
    """The solve refines in P1, so its best structure is slightly off its symmetry; the phase handed to the joint
    refinement is that structure made exactly symmetric (as in the CIF), so it is refined in its space group."""
    import types

    import atomdiff.tasks.solve as solve
    from atomdiff.refine.symmetry import symmetry_constraints
    from atomdiff.tasks.phases import generated_phase

    rng = np.random.default_rng(0)
    off = nacl().replace(frac=nacl().frac + rng.normal(0, 0.002, (8, 3)), cell=np.diag([5.64, 5.645, 5.635]))
    best = types.SimpleNamespace(refinement=types.SimpleNamespace(structure=off))

    class SolverStub:
        def __init__(self, *args, **kwargs):
            pass

        def run(self, tick):
            return [best]

        def rank(self, found):
            return found

        def with_orderings(self, ranked, found, tick):
            return ranked

    monkeypatch.setattr(solve, "Solver", SolverStub)
    found = generated_phase(None, mixture({"NaCl": 1.0}, step=0.05, stop=60), {11: 1, 17: 1})
    assert symmetry_constraints(found, 1e-5).space_group == "Fm-3m (225)"
    assert symmetry_constraints(off, 1e-3).space_group == "P1 (1)"
    assert found.volume / len(found) == pytest.approx(off.volume / len(off), rel=1e-3)


def test_search_compositions_from_the_training_cells_main_compound_first():
    from atomdiff.tasks.phases import search_compositions

    cells = {"Cu2S4SnZn": 9, "Cu4S8Sn2Zn2": 3, "S2Zn2": 1, "SZn": 1, "S4Sn4": 3, "O3SrTi": 7, "Cu2S": 1, "CuS": 1}
    found = search_compositions(cells, [29, 30, 50, 16])
    # kesterite's two cells are one composition; ZnS's two cells count 2, as SnS's 3 count 3; no oxide
    assert [label for label, _ in found] == ["Cu2ZnSnS4", "SnS", "ZnS", "Cu2S", "CuS"]
    assert found[0][1] == {16: 4, 29: 2, 30: 1, 50: 1}
    given = search_compositions(cells, [29, 30, 50, 16], [{30: 2, 16: 2}])
    assert [label for label, _ in given] == ["Cu2ZnSnS4", "SnS", "Cu2S", "CuS"]  # Zn2S2 given: ZnS not again
    assert search_compositions(cells, [8]) == []
    assert search_compositions(cells, [16, 30])[0][0] == "SZn"  # in the order of the elements given


def test_phases_cli_writes_table_plot_and_report(tmp_path: Path):
    pattern = mixture({"NaCl": 0.7, "Si": 0.3}, seed=1, step=0.05, stop=60)
    path = tmp_path / "mix.xy"
    write_pattern(path, pattern.x, pattern.y)
    known = tmp_path / "known"
    known.mkdir()
    write_structures(nacl(), known / "halite.cif")
    write_structures(silicon(), known / "silicon.cif")
    out = tmp_path / "out"
    assert run(["phases", str(path), "--elements", "Na,Cl,Si", "--known", str(known), "-o", str(out)]) == 0
    table = (out / "phases.csv").read_text().splitlines()
    assert table[0].startswith("phase,formula,space_group,weight_percent,sigma_percent")
    rows = {line.split(",")[0]: float(line.split(",")[3]) for line in table[1:]}
    assert rows["halite"] == pytest.approx(70, abs=2) and rows["silicon"] == pytest.approx(30, abs=2)
    assert (out / "fit.png").is_file() and "<canvas" in (out / "report.html").read_text()


def test_phases_cli_refuses_a_known_phase_outside_the_elements(tmp_path: Path, capsys):
    pattern = mixture({"NaCl": 1.0}, step=0.1)
    path = tmp_path / "p.xy"
    write_pattern(path, pattern.x, pattern.y)
    known = tmp_path / "known"
    known.mkdir()
    write_structures(periclase(), known / "mgo.cif")
    assert run(["phases", str(path), "--elements", "Na,Cl", "--known", str(known), "-o", str(tmp_path / "o")]) == 2
    assert "mgo.cif" in capsys.readouterr().err


def test_phases_cli_with_elements_alone_needs_a_composition_of_them(tmp_path: Path, capsys):
    pattern = mixture({"NaCl": 1.0}, step=0.1)
    path = tmp_path / "p.xy"
    write_pattern(path, pattern.x, pattern.y)
    # perov-5's training cells are all ternary and richer: none is made of oxygen alone
    assert run(["phases", str(path), "--elements", "O", "--model", "perov5", "-o", str(tmp_path / "o")]) == 2
    assert "no composition of O alone" in capsys.readouterr().err
