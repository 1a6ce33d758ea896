"""Reverse Monte Carlo: its one-atom-at-a-time G(r) against the forward model, the closest approach, the fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomdiff.errors import InputError
from atomdiff.physics import descriptors
from atomdiff.physics.total_scattering import PDFForwardModel
from atomdiff.refine.rmc import PDFReverseMonteCarlo, random_start
from atomdiff.structure import Structure, StructureBatch

R = np.arange(0.5, 6.0 + 1e-9, 0.02)


def _forward(model: PDFForwardModel, s: Structure) -> np.ndarray:
    with torch.no_grad():
        return model(StructureBatch.from_structures([s], dtype=torch.float64)).y[0].numpy()


def _triclinic_mixed() -> Structure:
    rng = np.random.default_rng(3)
    cell = np.array([[7.1, 0.0, 0.0], [1.3, 6.6, 0.0], [-0.8, 1.1, 7.4]])
    return random_start(Structure(rng.choice([8, 14, 22], size=24), np.zeros((24, 3)), cell), 1.4, seed=2)


def _diamond(n: int = 2) -> Structure:
    base = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    basis = np.vstack([base, base + 0.25])
    frac = np.vstack([(basis + [i, j, k]) / n for i in range(n) for j in range(n) for k in range(n)])
    return Structure(np.full(len(frac), 6), frac, np.eye(3) * 3.567 * n)


@pytest.mark.parametrize(
    ("radiation", "qmax", "lorch"), [("xray", None, False), ("neutron", None, False), ("xray", 20.0, True)]
)
def test_histogram_g_matches_the_forward_model(radiation, qmax, lorch):
    s = _triclinic_mixed()
    model = PDFForwardModel(R, radiation, qmax=qmax, lorch=lorch, qdamp=0.02, sigma=0.05)
    exact = _forward(model, s)
    rmc = PDFReverseMonteCarlo(s, model, exact, sigma=0.01)  # 0.005 Å bins
    assert np.abs(rmc.g - exact).max() < 2e-3 * np.abs(exact).max()
    fine = PDFReverseMonteCarlo(s, model, exact, sigma=0.01, bin_width=0.001)
    assert np.abs(fine.g - exact).max() < 1e-4 * np.abs(exact).max()


def test_incremental_updates_equal_a_recomputation_and_keep_the_closest_approach():
    s = _triclinic_mixed()
    model = PDFForwardModel(R, "xray", sigma=0.05)
    target = 1.3 * _forward(model, s)  # a target the start does not fit, so that moves are accepted and refused
    rmc = PDFReverseMonteCarlo(s, model, target, sigma=1.0, closest=1.4, max_step=0.5, seed=1)
    status = rmc.run(proposals=1500)
    assert status.proposed == 1500 and 50 < status.accepted < 1500
    g, hist, chi2 = rmc.g.copy(), rmc.hist.copy(), rmc.chi2
    rmc._sync()
    np.testing.assert_allclose(rmc.g, g, atol=1e-9)
    np.testing.assert_allclose(rmc.hist, hist, atol=1e-9)
    assert rmc.chi2 == pytest.approx(chi2, rel=1e-9)
    assert descriptors.min_distance(rmc.structure) >= 1.4
    # the moved cell's G(r) is still the forward model's (up to the binning)
    assert np.abs(rmc.g - _forward(model, rmc.structure)).max() < 1e-3 * np.abs(target).max()


def test_rmc_fits_a_disordered_cell_from_a_random_start_and_is_reproducible():
    ref = random_start(_diamond(2), 1.3, seed=11)  # 64 atoms at diamond's density, no order
    model = PDFForwardModel(R, "xray", sigma=0.08)
    target = _forward(model, ref)
    start = random_start(ref, 1.2, seed=0)
    runs = []
    for _ in range(2):
        rmc = PDFReverseMonteCarlo(start, model, target, sigma=0.02, closest=1.2, max_step=0.3, seed=4)
        first = rmc.rw
        status = rmc.run(proposals=4000)
        runs.append(rmc.structure.frac)
    assert status.rw < 0.25 * first
    exact = _forward(model, rmc.structure)
    assert np.sqrt(np.sum((exact - target) ** 2) / np.sum(target**2)) == pytest.approx(status.rw, abs=0.01)
    np.testing.assert_array_equal(runs[0], runs[1])
    other = PDFReverseMonteCarlo(start, model, target, sigma=0.02, closest=1.2, max_step=0.3, seed=5)
    other.run(proposals=200)
    assert not np.array_equal(other.structure.frac, runs[0])


def test_run_stops_at_the_target_fit():
    ref = random_start(_diamond(2), 1.3, seed=11)
    model = PDFForwardModel(R, "xray", sigma=0.08)
    target = _forward(model, ref)
    rmc = PDFReverseMonteCarlo(random_start(ref, 1.2, seed=1), model, target, sigma=0.02, closest=1.2, seed=0)
    goal = 0.8 * rmc.rw
    status = rmc.run(proposals=10_000, until_rw=goal)
    assert status.rw <= goal and status.proposed < 10_000


def test_random_start_keeps_the_closest_approach_and_refuses_an_impossible_one():
    s = random_start(_diamond(2), 1.5, seed=3)
    assert descriptors.min_distance(s) >= 1.5
    np.testing.assert_array_equal(s.cell, _diamond(2).cell)
    with pytest.raises(InputError, match="no room"):
        random_start(_diamond(1), 3.0, seed=0, attempts=50)


def test_bad_input_is_refused():
    s = _diamond(1)
    model = PDFForwardModel(R, "xray")
    target = _forward(model, s)
    with pytest.raises(InputError, match="points"):
        PDFReverseMonteCarlo(s, model, target[:-1], sigma=0.01)
    with pytest.raises(InputError, match="sigma"):
        PDFReverseMonteCarlo(s, model, target, sigma=0.0)
    with pytest.raises(InputError, match="closest approach"):
        PDFReverseMonteCarlo(s, model, target, sigma=0.01, closest=2.0)
    with pytest.raises(InputError, match="non-finite"):
        PDFReverseMonteCarlo(s, model, target * np.nan, sigma=0.01)
    with pytest.raises(InputError, match="give"):
        PDFReverseMonteCarlo(s, model, target, sigma=0.01).run()
