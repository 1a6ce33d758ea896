"""PatternTarget: exact linear scale and background, single structures and mixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomdiff.errors import InputError
from atomdiff.physics.diffraction import PowderDiffractionModel, Profile, two_theta_grid
from atomdiff.physics.profile import chebyshev_background
from atomdiff.physics.target import PatternTarget
from atomdiff.structure import Structure
from atomdiff.structure.batch import StructureBatch


def _nacl() -> Structure:
    fcc = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return Structure([11] * 4 + [17] * 4, np.vstack([fcc, fcc + [0.5, 0, 0]]), np.eye(3) * 5.64)


def _si() -> Structure:
    d = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return Structure([14] * 8, np.vstack([d, d + 0.25]), np.eye(3) * 5.431)


@pytest.fixture
def model():
    return PowderDiffractionModel("xray", "CuKa1", two_theta_grid(20, 90, 0.02), profile=Profile(0, 0, 0.01, 0.5))


def test_scale_and_background_are_recovered_exactly(model):
    batch = StructureBatch.from_structures([_nacl()])
    y = model(batch).y[0]
    bg = chebyshev_background(model.x, [50.0, -10.0, 4.0])
    target = PatternTarget(model, 3.5 * y + bg, weights=torch.ones_like(y), background_order=4)
    fit = target.fit(batch)
    assert float(fit.rwp[0]) < 1e-9
    assert float(fit.scale[0]) == pytest.approx(3.5, rel=1e-9)
    assert torch.allclose(fit.background[0], bg, atol=1e-6)


def test_mixture_recovers_both_scales_and_wrong_structure_fits_worse(model):
    batch = StructureBatch.from_structures([_nacl(), _si()])
    y = model(batch).y
    obs = 2.0 * y[0] + 0.5 * y[1] + 20.0
    target = PatternTarget(model, obs, weights=torch.ones_like(obs), background_order=1)
    fit = target.fit(batch, mixture=True)
    assert fit.y_calc.shape == (1, obs.shape[0])
    assert torch.allclose(fit.scale, torch.tensor([2.0, 0.5], dtype=torch.float64), rtol=1e-8)
    alone = target.fit(batch)
    assert float(fit.rwp[0]) < 1e-9 < float(alone.rwp.min())


def test_mixture_scales_stay_non_negative(model):
    """NaCl measured with its lines 0.05 % further in than the model's, and a phase with NaCl's lines 0.3 % further
    out offered beside it: a free fit takes that phase at a negative scale to move NaCl's peaks; the mixture fit
    keeps it at 0 and is then NaCl's own fit. A phase that is there keeps its positive scale."""
    larger = Structure(_nacl().numbers, _nacl().frac, np.eye(3) * 5.64 * 1.0005)
    y_obs = 2.0 * model(StructureBatch.from_structures([larger])).y[0]
    target = PatternTarget(model, y_obs, weights=torch.ones_like(y_obs), background_order=2)
    shifted = Structure(_nacl().numbers, _nacl().frac, np.eye(3) * 5.64 * 0.997)
    both = model(StructureBatch.from_structures([_nacl(), shifted])).y
    free = torch.linalg.lstsq(torch.cat([both, target._basis]).T, y_obs.unsqueeze(-1)).solution[:2, 0]
    assert float(free[1]) < 0  # what an unconstrained fit does
    fit = target.fit_patterns(both, mixture=True)
    assert float(fit.scale[1]) == 0.0 and float(fit.scale[0]) > 0
    alone = target.fit_patterns(both[:1], mixture=True)
    assert torch.allclose(fit.y_calc, alone.y_calc) and torch.allclose(fit.rwp, alone.rwp)
    assert target.active_phases(both).tolist() == [True, False]
    # both phases present: both kept, scales recovered
    y_mix = 2.0 * both[0] + 0.5 * both[1]
    mixed = PatternTarget(model, y_mix, weights=torch.ones_like(y_mix), background_order=2)
    assert mixed.fit_patterns(both, mixture=True).scale.tolist() == pytest.approx([2.0, 0.5], rel=1e-6)


def test_bad_targets_are_refused(model):
    with pytest.raises(InputError, match="points"):
        PatternTarget(model, torch.ones(10))
    with pytest.raises(InputError, match="background order"):
        PatternTarget(model, torch.ones_like(model.x), background_order=-1)


def test_a_coarse_target_gives_the_rwp_of_broadened_peaks_at_a_fraction_of_the_points():
    """PatternTarget.coarse(extra) thins the grid to ~4 points per extra FWHM and evaluates each peak within
    ±8 FWHM: Rwp of structures with peaks broadened by that much is the same as on the full grid with the full
    window within 2 % (relative); no broadening or a non-uniform grid keep the target itself, a width below 2
    steps keeps the grid (only the window narrows, unless cutoff=None keeps the model's); the original model
    keeps its grid and window."""
    from atomdiff.physics.profile import Instrument
    from atomdiff.physics.target import BROADENED_CUTOFF

    x = two_theta_grid(10, 90, 0.02)
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    truth = Structure([38, 22, 8, 8, 8], frac, np.eye(3) * 3.905)
    model = PowderDiffractionModel("xray", "CuKa1", x, profile=Profile(0.0, 0.0, 0.01, 0.5, cutoff=20))
    y = model(StructureBatch.from_structures([truth])).y[0] * 1e4 + 100
    target = PatternTarget(model, torch.as_tensor(np.random.default_rng(0).poisson(y.numpy()).astype(float)))
    candidates = [truth.replace(cell=np.eye(3) * a) for a in (3.85, 3.90, 3.95)]
    batch = StructureBatch.from_structures(candidates)
    for extra in (0.4, 0.8):
        coarse = target.coarse(extra)
        assert coarse.x.shape[0] < x.shape[0] / 4 and target.x.shape[0] == x.shape[0]
        inst = Instrument.from_profile(model.profile, 3)
        inst.extra_fwhm = torch.full((3,), extra, dtype=torch.float64)
        full_rwp, coarse_rwp = target.fit(batch, inst).rwp, coarse.fit(batch, inst).rwp
        np.testing.assert_allclose(coarse_rwp.numpy(), full_rwp.numpy(), rtol=0.02)
        assert int(coarse_rwp.argmin()) == int(full_rwp.argmin()) == 1
    assert target.coarse(0.0) is target
    narrow = target.coarse(0.1)
    assert torch.equal(narrow.x, target.x) and narrow.model.profile.cutoff == BROADENED_CUTOFF
    assert model.profile.cutoff == 20 and target.coarse(0.4).model.profile.cutoff == BROADENED_CUTOFF
    assert target.coarse(0.1, cutoff=None) is target  # the model's own window and every point
    assert target.coarse(0.4, cutoff=None).model.profile.cutoff == 20
    assert target.coarse(0.4) is target.coarse(0.4)  # cached
    uneven = torch.cat([x[:100], x[100:] + 0.001])
    other = PatternTarget(model.on_grid(uneven), target.y_obs)
    assert other.coarse(0.8) is other and model.x.shape[0] == x.shape[0]
