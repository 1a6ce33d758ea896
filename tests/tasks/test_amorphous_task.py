"""`atomdiff amorphous` end to end with tiny models: cells from density/atoms/fixed cell, guided by XANES and
G(r) targets, outputs (extxyz, report), reproducibility, and clear errors for contradictory input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atomdiff.cli.main import run
from atomdiff.diffusion.amorphous import AmorphousDiffusion
from atomdiff.errors import InputError
from atomdiff.models.local import LocalNetConfig
from atomdiff.models.xanes import XanesSurrogate
from atomdiff.structure import Structure
from atomdiff.structure.io import read_structures, write_structures
from atomdiff.tasks.amorphous import AmorphousSettings, Targets, generate_amorphous, resolve_cell


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    AmorphousDiffusion(LocalNetConfig(hidden=8, layers=1, cutoff=3.0), elements=[6], densities=(1.5, 3.5)).save(
        root / "prior"
    )
    XanesSurrogate(LocalNetConfig(hidden=8, layers=1, cutoff=3.0), 10, 6, [0.5] * 10, [0.2] * 10).save(root / "xanes")
    return root


def test_resolve_cell_from_two_of_three():
    cell, n = resolve_cell(6, 2.0, 100, None)
    s = Structure(np.full(n, 6), np.zeros((n, 3)), cell)
    assert s.density == pytest.approx(2.0)
    cell2, n2 = resolve_cell(6, 2.0, None, cell)
    assert n2 == 100
    with pytest.raises(InputError, match="two of the three"):
        resolve_cell(6, 3.0, 100, cell)
    with pytest.raises(InputError, match="--density and --atoms"):
        resolve_cell(6, None, 100, None)


def test_generation_is_reproducible_and_notes_extrapolation(models):
    prior = AmorphousDiffusion.load(models / "prior")
    settings = AmorphousSettings(density=4.5, atoms=30, samples=2, steps=4, seed=3)
    a = generate_amorphous(prior, settings)
    b = generate_amorphous(prior, settings)
    assert all(np.array_equal(x.frac, y.frac) for x, y in zip(a.structures, b.structures, strict=True))
    assert any("outside the training range" in n for n in a.notes)
    assert a.curves == {}
    with pytest.raises(InputError, match="trained on"):
        generate_amorphous(prior, AmorphousSettings(element="Si", density=2.0, atoms=10, steps=2))


def test_cli_writes_samples_and_report(models, tmp_path):
    target_x = tmp_path / "xanes.txt"
    np.savetxt(target_x, np.linspace(0.3, 0.7, 10))
    r = np.linspace(0.5, 5.0, 46)
    target_g = tmp_path / "g.gr"
    np.savetxt(target_g, np.column_stack([r, np.sin(r)]), header="r G")
    out = tmp_path / "out" / "aC.extxyz"
    args = [
        "amorphous",
        "--density",
        "2.0",
        "--atoms",
        "30",
        "--samples",
        "2",
        "--steps",
        "5",
        "--seed",
        "1",
        "--model",
        str(models / "prior"),
        "--surrogate",
        str(models / "xanes"),
        "--target-xanes",
        str(target_x),
        "--target-pdf",
        str(target_g),
        "-o",
        str(out),
    ]
    assert run(args) == 0
    cells = read_structures(out)
    assert len(cells) == 2 and all(len(c) == 30 for c in cells)
    assert {"sp3", "misfit_xanes", "misfit_pdf", "density_g_cm3"} <= set(cells[0].info)
    report = out.parent / "aC_report"
    for name in (
        "report.html",
        "summary.csv",
        "rdf.png",
        "bond_angles.png",
        "coordination.png",
        "xanes.png",
        "pdf.png",
        "guidance.png",
        "settings.json",
    ):
        assert (report / name).is_file(), name
    html = (report / "report.html").read_text()
    assert "Guidance" in html and "XANES from σ ≤ 0.3 Å, per domain of about 216 atoms" in html
    assert json.loads((report / "settings.json").read_text())["guidance_clip"] == 5.0
    first = out.read_bytes()
    assert run(args) == 0
    assert out.read_bytes() == first  # same seed, same structures
    unclipped = out.with_name("unclipped.extxyz")
    assert run([*args[:-2], "--guidance-clip", "0", "-o", str(unclipped)]) == 0
    assert json.loads((unclipped.parent / "unclipped_report" / "settings.json").read_text())["guidance_clip"] is None


def test_cli_fixed_cell_and_bad_input(models, tmp_path, capsys):
    cell_file = tmp_path / "cell.cif"
    write_structures([Structure([6], [[0, 0, 0]], np.eye(3) * 7.0)], cell_file)
    out = tmp_path / "fixed.extxyz"
    assert (
        run(
            [
                "amorphous",
                "--cell",
                str(cell_file),
                "--atoms",
                "25",
                "--steps",
                "2",
                "--model",
                str(models / "prior"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    np.testing.assert_allclose(read_structures(out)[0].cell, np.eye(3) * 7.0)
    assert (
        run(
            [
                "amorphous",
                "--density",
                "2",
                "--atoms",
                "5",
                "-o",
                str(tmp_path / "x.cif"),
                "--model",
                str(models / "prior"),
            ]
        )
        == 2
    )
    assert (
        run(
            [
                "amorphous",
                "--density",
                "2",
                "--atoms",
                "5",
                "-o",
                str(tmp_path / "x.extxyz"),
                "--model",
                str(models / "prior"),
                "--guidance-mode",
                "magic",
                "--target-pdf",
                str(cell_file),
            ]
        )
        == 2
    )
    assert (
        run(
            [
                "amorphous",
                "--density",
                "2",
                "--atoms",
                "5",
                "-o",
                str(tmp_path / "y.extxyz"),
                "--model",
                str(tmp_path / "nope"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert ".extxyz" in err and "nope" in err
    assert not (tmp_path / "y.extxyz").exists()


def test_targets_need_a_surrogate_for_xanes():
    from atomdiff.tasks.amorphous import build_guidance

    with pytest.raises(InputError, match="surrogate"):
        build_guidance(AmorphousSettings(), Targets(xanes=np.zeros(10)), None)


def test_xanes_is_guided_per_domain_and_clipped_by_default(models):
    """216-atom domains and gradients clipped at 5 medians unless told otherwise (0 on the command line: the
    whole cell's mean, unclipped)."""
    from atomdiff.tasks.amorphous import build_guidance

    surrogate = XanesSurrogate.load(models / "xanes")
    targets = Targets(xanes=np.linspace(0.3, 0.7, 10))
    guidance = build_guidance(AmorphousSettings(), targets, surrogate)
    assert guidance.domain_atoms == 216 and guidance.terms[0].per_atom is not None
    assert build_guidance(AmorphousSettings(guidance_domain=None), targets, surrogate).domain_atoms is None
    assert guidance.step_clip == 5.0
    assert build_guidance(AmorphousSettings(guidance_clip=None), targets, surrogate).step_clip is None


def test_xanes_guides_from_its_start_and_pdf_at_every_level(models):
    from atomdiff.tasks.amorphous import XANES_START, build_guidance

    surrogate = XanesSurrogate.load(models / "xanes")
    r = np.linspace(0.5, 5.0, 46)
    targets = Targets(xanes=np.linspace(0.3, 0.7, 10), pdf=(r, np.sin(r)))
    guidance = build_guidance(AmorphousSettings(), targets, surrogate)
    xanes, pdf = guidance.terms
    assert xanes.sigma_start == XANES_START and pdf.sigma_start is None
    assert guidance.active(2.0) and not xanes.active(2.0) and xanes.active(XANES_START)
    only_xanes = build_guidance(AmorphousSettings(xanes_start=0.5), Targets(xanes=targets.xanes), surrogate)
    assert not only_xanes.active(0.6) and only_xanes.active(0.5)


def test_a_guided_run_restarts_from_0_2_angstrom_by_default(models):
    """Two restarts from σ = 0.2 Å when a target guides (GUIDED_RESTARTS), none without guidance, and an explicit
    count wins; the result's settings say how many were made."""
    from atomdiff.tasks.amorphous import GUIDED_RESTARTS

    prior = AmorphousDiffusion.load(models / "prior")
    surrogate = XanesSurrogate.load(models / "xanes")
    r = np.linspace(0.5, 5.0, 46)
    base = dict(density=2.0, atoms=30, samples=1, steps=4, restart_steps=3, seed=2)
    target = Targets(xanes=np.linspace(0.3, 0.7, 10))
    xanes = generate_amorphous(prior, AmorphousSettings(**base), target, surrogate)
    assert GUIDED_RESTARTS == 2 and xanes.settings.restarts == 2
    sigmas = [s for s, _ in xanes.history]
    # 4 levels 3.0 → 0.01 (XANES guides the two below 0.3 Å), then 2 restarts of 3 levels from 0.2 Å
    assert len(sigmas) == 2 + 2 * 3 and sigmas[2] == pytest.approx(0.2) and sigmas[5] == pytest.approx(0.2)
    pdf = generate_amorphous(prior, AmorphousSettings(**base), Targets(pdf=(r, np.sin(r))), surrogate)
    assert pdf.settings.restarts == 2 and len(pdf.history) == 4 + 2 * 3  # G(r) guides at every level
    once = generate_amorphous(prior, AmorphousSettings(**base, restarts=1), target, surrogate)
    assert once.settings.restarts == 1 and len(once.history) == 2 + 3
    plain = generate_amorphous(prior, AmorphousSettings(**base, guidance=0.0), target, surrogate)
    assert plain.settings.restarts == 0


def test_a_sample_that_runs_away_from_its_target_gets_a_note():
    """Final weighted misfit against the lowest along the steps at which every term guided: the XANES term starts
    at 0.3 Å, so the low G(r)-only misfits before it do not count."""
    from types import SimpleNamespace

    from atomdiff.tasks.amorphous import RUNAWAY_FACTOR, runaway_notes

    terms = [
        SimpleNamespace(name="pdf", weight=1.0, sigma_start=None),
        SimpleNamespace(name="xanes", weight=2.0, sigma_start=0.3),
    ]
    history = [(1.0, [0.001, 0.001]), (0.3, [0.05, 0.04]), (0.1, [0.02, 0.03]), (0.01, [0.02, 0.03])]
    guidance = SimpleNamespace(terms=terms, sigma_start=None, history=history)
    curves = {"pdf": {"misfit": [0.01, 0.1]}, "xanes": {"misfit": [0.005, 0.2]}}  # weighted: 0.02 and 0.5
    notes = runaway_notes(guidance, curves)
    assert RUNAWAY_FACTOR == 10.0 and len(notes) == 1 and notes[0].startswith("sample 2 ran away")
    assert runaway_notes(None, curves) == []


def test_an_unguided_run_is_still_measured_against_its_target(models):
    prior = AmorphousDiffusion.load(models / "prior")
    surrogate = XanesSurrogate.load(models / "xanes")
    targets = Targets(xanes=np.linspace(0.3, 0.7, 10))
    settings = AmorphousSettings(density=2.0, atoms=30, samples=2, steps=4, seed=2, guidance=0.0)
    plain = generate_amorphous(prior, settings, targets, surrogate)
    untargeted = generate_amorphous(prior, settings)
    # the same cells as without a target (nothing steers them), with their misfit to the target measured
    assert all(np.array_equal(a.frac, b.frac) for a, b in zip(plain.structures, untargeted.structures, strict=True))
    assert plain.history == [] and plain.curves["xanes"]["misfit"].shape == (2,)
    guided = generate_amorphous(
        prior, AmorphousSettings(density=2.0, atoms=30, samples=2, steps=4, seed=2), targets, surrogate
    )
    assert set(guided.curves) == {"xanes"} and guided.history


def test_another_element_gets_its_own_descriptors_and_needs_its_own_surrogate(models, tmp_path):
    """An amorphous Si run with a tiny Si prior and a tiny Si K surrogate: the summary gives 3-, 4-, 5-fold
    fractions with the Si–Si bond cutoff, the closest approach defaults to 0.6 × that cutoff, and a carbon
    surrogate is refused for a silicon cell."""
    torch.manual_seed(1)
    AmorphousDiffusion(LocalNetConfig(hidden=8, layers=1, cutoff=4.5), elements=[14], densities=(2.0, 2.6)).save(
        tmp_path / "si_prior"
    )
    XanesSurrogate(LocalNetConfig(hidden=8, layers=1, cutoff=4.5), 10, 14, [0.5] * 10, [0.2] * 10).save(
        tmp_path / "si_k"
    )
    target = tmp_path / "si.txt"
    np.savetxt(target, np.linspace(0.3, 0.7, 10))
    out = tmp_path / "si.extxyz"
    args = ["amorphous", "--element", "Si", "--density", "2.3", "--atoms", "40", "--steps", "3", "-o", str(out)]
    args += ["--model", str(tmp_path / "si_prior"), "--target-xanes", str(target), "--samples", "2"]
    assert run([*args, "--surrogate", str(tmp_path / "si_k")]) == 0
    header = (tmp_path / "si_report" / "summary.csv").read_text().splitlines()[0].split(",")
    assert header[:8] == ["sample", "atoms", "density_g_cm3", "cn3", "cn4", "cn5", "mean_cn", "min_distance_A"]
    assert header[-1] == "misfit_xanes"
    settings = AmorphousSettings(element="Si", density=2.3, atoms=40)
    assert settings.sample_options().min_distance == pytest.approx(0.6 * 2.85, abs=0.01)
    assert AmorphousSettings().sample_options().min_distance == 1.1
    for s in read_structures(out):
        assert s.info["min_distance_A"] > 1.6  # pushed apart to the silicon default
    prior = AmorphousDiffusion.load(tmp_path / "si_prior")
    with pytest.raises(InputError, match="surrogate computes the C K edge"):
        generate_amorphous(prior, settings, Targets(xanes=np.full(10, 0.5)), XanesSurrogate.load(models / "xanes"))


def test_an_sq_target_guides_through_the_binned_debye_sum(models):
    """The S(Q) term's forward model is the binned Debye sum (SQ_GUIDANCE_STEP); it guides at every level (4, then
    2 restarts of 3) and the achieved S(Q) is reported on the target's grid."""
    from atomdiff.tasks.amorphous import SQ_GUIDANCE_STEP, build_guidance

    prior = AmorphousDiffusion.load(models / "prior")
    q = np.linspace(0.5, 12.0, 40)
    targets = Targets(sq=(q, 1.0 + 0.1 * np.sin(q)))
    guidance = build_guidance(AmorphousSettings(), targets, None)
    (term,) = guidance.terms
    assert term.name == "sq" and term.forward.__defaults__[0].r_step == SQ_GUIDANCE_STEP == 0.002
    base = dict(density=2.0, atoms=30, samples=1, steps=4, restart_steps=3, seed=2)
    result = generate_amorphous(prior, AmorphousSettings(**base), targets)
    assert len(result.history) == 4 + 2 * 3 and result.curves["sq"]["achieved"].shape == (1, 40)
